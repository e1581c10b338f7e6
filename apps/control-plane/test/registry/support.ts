import { randomUUID } from 'node:crypto';
import { connect as connectTcp, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { CreatedEnrollmentTokenSchema, EnrollResponseSchema, decode, encode, lastWill, topics, type MessageOf, type TopicKind } from '@flotilla/protocol';
import { makeHello, makeStatus } from '@flotilla/protocol/testing';
import { connectAsync, type MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { pino } from 'pino';
import type { ControlPlane } from '../../src/app/create-app.js';
import type { TestBackend } from '../support/databases.js';
import { adminLogin, api, startTestControlPlane } from '../support/control-plane.js';

export interface LogLine {
  level: number;
  msg: string;
  deviceId?: string;
  [key: string]: unknown;
}

/** A control plane whose log lines are kept for assertions; restartable on the same database. */
export interface RegistryControlPlane {
  readonly cp: ControlPlane;
  logs: LogLine[];
  adminToken: string;
  restart(): Promise<ControlPlane>;
  dispose(): Promise<void>;
}

export async function startRegistryControlPlane(backend: TestBackend, env: Record<string, string>): Promise<RegistryControlPlane> {
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const t = await startTestControlPlane(backend, env, pino({ level: 'info' }, sink));
  const { adminToken } = await adminLogin(t.cp, t.isolated.dataDir);
  return {
    get cp() {
      return t.cp;
    },
    logs,
    adminToken,
    restart: () => t.restart(),
    dispose: () => t.dispose(),
  };
}

export interface DeviceCredentials {
  deviceId: string;
  username: string;
  password: string;
}

/** Enrollment through the REST API, as a real agent does it. */
export async function enrollDevice(cp: ControlPlane, adminToken: string, name: string, labels: Record<string, string> = {}): Promise<DeviceCredentials> {
  const minted = await api(cp, '/api/v1/enrollment-tokens', { token: adminToken, body: { labels, uses: 1 } });
  if (minted.status !== 201) throw new Error(`token: ${minted.status} ${JSON.stringify(minted.body)}`);
  const { token } = CreatedEnrollmentTokenSchema.parse(minted.body);
  const enrolled = await api(cp, '/api/v1/enroll', { body: { token, name } });
  if (enrolled.status !== 201) throw new Error(`enroll: ${enrolled.status} ${JSON.stringify(enrolled.body)}`);
  const { deviceId, mqtt } = EnrollResponseSchema.parse(enrolled.body);
  return { deviceId, username: mqtt.username, password: mqtt.password };
}

type OutboxKind = 'telemetry' | 'event' | 'usage';
type OutboxMessage = MessageOf<'telemetry'> | MessageOf<'event'> | MessageOf<'usage'>;

/**
 * A device agent reduced to its protocol: a real mqtt.js client with the protocol's last will, an in-memory outbox
 * that deletes entries only on `outbox/ack` [P-4], and the connection sequence of [P-1.6].
 */
export class TestAgent {
  client: MqttClient | undefined;
  sessionId = '';
  /** unacknowledged entries by seq */
  readonly outbox = new Map<number, { kind: OutboxKind; payload: string }>();
  lastSeq = 0;
  ackedUpTo = -1;
  readonly acks: { upToSeq: number; at: number; sessionId?: string | undefined }[] = [];

  constructor(readonly creds: DeviceCredentials) {}

  get deviceId(): string {
    return this.creds.deviceId;
  }

  /** Connects (clean: false, last will), subscribes to its acks; does not say hello yet. */
  async connect(port: number, keepalive = 2): Promise<MqttClient> {
    this.sessionId = `sess-${randomUUID()}`;
    const will = lastWill(this.deviceId, this.sessionId, Date.now(), '0.1.0');
    const client = await connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: this.deviceId,
      username: this.creds.username,
      password: this.creds.password,
      clean: false,
      keepalive,
      reconnectPeriod: 0,
      will: { topic: will.topic, payload: Buffer.from(will.payload), qos: will.qos, retain: will.retain },
    });
    (client.stream as Socket).setNoDelay?.(true);
    client.on('error', () => undefined);
    client.on('message', (topic, payload) => {
      if (topic !== topics.outboxAck(this.deviceId)) return;
      const ack = decode('outboxAck', payload);
      if (!ack.ok) return;
      this.acks.push({ upToSeq: ack.value.upToSeq, at: Date.now(), sessionId: ack.value.sessionId });
      this.ackedUpTo = Math.max(this.ackedUpTo, ack.value.upToSeq);
      for (const seq of this.outbox.keys()) if (seq <= ack.value.upToSeq) this.outbox.delete(seq);
    });
    await client.subscribeAsync(topics.outboxAck(this.deviceId), { qos: 1 });
    this.client = client;
    return client;
  }

  /** [P-1.6] hello, then retained online status. */
  async sayHello(overrides: Partial<MessageOf<'hello'>> = {}): Promise<void> {
    await this.publish('hello', makeHello({ ts: Date.now(), sessionId: this.sessionId, outbox: { lastSeq: this.lastSeq }, ...overrides }));
    await this.publish('status', makeStatus({ ts: Date.now(), sessionId: this.sessionId, state: 'online' }), true);
  }

  async publish<K extends TopicKind>(kind: K, value: MessageOf<K>, retain = false): Promise<void> {
    await this.publishRaw(topics[kind](this.deviceId), encode(kind, value), retain);
  }

  async publishRaw(topic: string, payload: string | Buffer, retain = false): Promise<void> {
    if (!this.client) throw new Error('not connected');
    await this.client.publishAsync(topic, payload, { qos: 1, retain });
  }

  /** Stores an entry in the outbox (assigning the next seq) and sends it when connected. */
  async add<K extends OutboxKind>(kind: K, make: (seq: number) => MessageOf<K>): Promise<number> {
    const seq = ++this.lastSeq;
    const payload = encode(kind, make(seq) as MessageOf<K> & OutboxMessage);
    this.outbox.set(seq, { kind, payload });
    // Not awaiting the PUBACK: a link that drops mid-publish must not stall the agent (the outbox resends it).
    if (this.client?.connected) this.publishRaw(topics[kind](this.deviceId), payload).catch(() => undefined);
    return seq;
  }

  /** [P-4.3] resends every unacknowledged entry in seq order. */
  async resendUnacked(): Promise<void> {
    for (const seq of [...this.outbox.keys()].sort((a, b) => a - b)) {
      const entry = this.outbox.get(seq);
      if (entry) await this.publishRaw(topics[entry.kind](this.deviceId), entry.payload);
    }
  }

  /** A dead link: the socket goes away without DISCONNECT, so the broker publishes the will. */
  kill(): void {
    this.client?.stream.destroy();
    this.client?.end(true);
    this.client = undefined;
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true).catch(() => undefined);
  }
}

/**
 * A frozen agent: raw MQTT over TCP that connects with a keepalive and a will, says hello and online, then never
 * sends another byte (no PINGREQ), so only the broker's keepalive timeout can notice it.
 */
export async function frozenAgent(port: number, creds: DeviceCredentials, keepalive: number): Promise<{ socket: Socket; lastPacketAt: number }> {
  const sessionId = `sess-${randomUUID()}`;
  const will = lastWill(creds.deviceId, sessionId, Date.now());
  const socket = connectTcp({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.on('error', () => undefined);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const connack = new Promise<void>((resolve, reject) => {
    parser.on('packet', (packet) => {
      if (packet.cmd !== 'connack') return;
      if (packet.returnCode === 0) resolve();
      else reject(new Error(`connack ${packet.returnCode}`));
    });
  });
  socket.on('data', (data) => parser.parse(data));
  socket.write(
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: creds.deviceId,
      keepalive,
      username: creds.username,
      password: Buffer.from(creds.password),
      will: { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: true },
    }),
  );
  await connack;
  const send = (kind: TopicKind, payload: string, retain: boolean) =>
    socket.write(mqttPacket.generate({ cmd: 'publish', topic: topics[kind](creds.deviceId), payload: Buffer.from(payload), qos: 0, retain, dup: false }));
  send('hello', encode('hello', makeHello({ ts: Date.now(), sessionId })), false);
  send('status', encode('status', makeStatus({ ts: Date.now(), sessionId, state: 'online' })), true);
  return { socket, lastPacketAt: Date.now() };
}
