import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decode, encode, EnrollRequestSchema, parseTopic, topicFor, TOPIC_SPECS, type MessageOf, type TopicKind } from '@flotilla/protocol';
import { connect, type MqttClient } from 'mqtt';

export type Received = { [K in TopicKind]?: MessageOf<K>[] };

/**
 * Plays the control plane's part with the protocol schemas: an enroll endpoint and an MQTT client that decodes
 * everything the device sends, acknowledges outbox entries and publishes desired states, jobs and commands.
 */
export class FakeControlPlane {
  /** `at`: performance.now() when it arrived, comparable with timestamps taken elsewhere in the test process. */
  readonly received: { kind: TopicKind; message: unknown; at: number }[] = [];
  readonly invalid: string[] = [];
  private client: MqttClient | undefined;
  private http: Server | undefined;
  autoAck = true;
  /** false plays a control plane older than the clock sync: its acks never name the hello [P-3.6] */
  answerHello = true;
  /** How far this control plane's clock runs ahead of the test's (negative: behind), in every timestamp it sends. */
  clockSkewMs = 0;
  private ackedSeq = 0;

  constructor(
    private readonly deviceId: string,
    private readonly brokerUrl: string,
    private readonly accounts: Record<string, string>,
  ) {}

  async startEnrollServer(token: string, password: string): Promise<string> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const parsed = EnrollRequestSchema.safeParse(JSON.parse(Buffer.concat(chunks).toString() || '{}'));
        if (req.url !== '/api/v1/enroll' || !parsed.success || parsed.data.token !== token) {
          res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'ENROLLMENT_TOKEN_INVALID', message: 'bad token' } }));
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ deviceId: this.deviceId, mqtt: { username: this.deviceId, password, urls: [this.brokerUrl] } }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.http = server;
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async connect(username: string): Promise<void> {
    const client = connect(this.brokerUrl, { clientId: username, username, password: this.accounts[username], clean: true, reconnectPeriod: 200 });
    this.client = client;
    client.on('connect', () => (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true));
    client.on('message', (topic, payload) => {
      const parsed = parseTopic(topic);
      // Only what the device sends; the subscription also echoes what this control plane publishes.
      if (!parsed || parsed.deviceId !== this.deviceId || TOPIC_SPECS[parsed.kind].direction !== 'agent-to-cp') return;
      if (payload.length === 0) return;
      const decoded = decode(parsed.kind, payload);
      if (!decoded.ok) {
        this.invalid.push(`${parsed.kind}: ${decoded.error.message}`);
        return;
      }
      this.received.push({ kind: parsed.kind, message: decoded.value, at: performance.now() });
      const value = decoded.value as { seq?: number; sessionId?: string };
      // [P-1.6] as the real control plane: every hello is answered with an ack naming it (the agent's clock sync).
      if (this.answerHello && parsed.kind === 'hello' && typeof value.sessionId === 'string') {
        this.publish('outboxAck', { v: 1, upToSeq: this.ackedSeq, ts: this.now(), sessionId: value.sessionId });
      }
      if (this.autoAck && (parsed.kind === 'telemetry' || parsed.kind === 'event' || parsed.kind === 'usage') && typeof value.seq === 'number') {
        this.ackedSeq = Math.max(this.ackedSeq, value.seq);
        this.publish('outboxAck', { v: 1, upToSeq: value.seq, ts: this.now() });
      }
    });
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    await client.subscribeAsync(`flotilla/v1/devices/${this.deviceId}/#`, { qos: 1 });
  }

  /** This control plane's clock. */
  now(): number {
    return Date.now() + this.clockSkewMs;
  }

  all<K extends TopicKind>(kind: K): MessageOf<K>[] {
    return this.received.filter((entry) => entry.kind === kind).map((entry) => entry.message as MessageOf<K>);
  }

  publish<K extends TopicKind>(kind: K, message: MessageOf<K>, retain = false): void {
    this.client?.publish(topicFor(kind, this.deviceId), encode(kind, message), { qos: 1, retain });
  }

  publishRaw(kind: TopicKind, payload: string, retain = false): void {
    this.client?.publish(topicFor(kind, this.deviceId), payload, { qos: 1, retain });
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
  }
}

export async function eventually<T>(probe: () => T | undefined | false, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
