import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { decode, encode, lastWill, topics, type DesiredState, type Hardware, type ModelStatus } from '@flotilla/protocol';
import { makeHardware, makeHello, makeStatus } from '@flotilla/protocol/testing';
import { connectAsync, type MqttClient } from 'mqtt';
import type { ControlPlane } from '../../src/app/create-app.js';
import { generateSecret, hashSecret, secretPrefix } from '../../src/identity/auth/secrets.js';
import { api } from '../support/control-plane.js';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;

/** The first admin's session token. */
export async function adminToken(cp: ControlPlane, dataDir: string): Promise<string> {
  const creds = JSON.parse(await readFile(join(dataDir, 'initial-credentials.json'), 'utf8')) as Record<string, string>;
  const login = await api<{ token: string }>(cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: creds.adminPassword } });
  if (login.status !== 200) throw new Error(`login: ${login.status}`);
  return login.body.token;
}

/** An admin-scope API key with the given role, written straight to the database (there is no key API yet). */
export async function apiKeyWithRole(cp: ControlPlane, role: 'viewer' | 'operator'): Promise<string> {
  const key = generateSecret('apiKey');
  await cp.database.prisma.apiKey.create({ data: { name: `test ${role}`, prefix: secretPrefix(key), keyHash: hashSecret(key), scope: 'admin', role } });
  return key;
}

/** A catalog entry for tests; sizes small enough for any test device. */
export function modelBody(name: string, over: Record<string, unknown> = {}) {
  const sha = Buffer.from(name).toString('hex').padEnd(64, '0').slice(0, 64);
  return {
    name,
    sourceUrl: `https://models.example/${name}.gguf`,
    sha256: sha,
    sizeBytes: 50 * MiB,
    quantization: 'Q8_0',
    memoryBytes: '256MiB',
    contextLength: 2048,
    tier: 'small',
    ...over,
  };
}

/**
 * A device agent reduced to what placement needs: enrolled over REST, a real mqtt.js client with the protocol's
 * last will, hello + retained online status [P-1.6], every desired state it receives [P-3.4], model state reports.
 */
export class FakeDevice {
  client: MqttClient | undefined;
  readonly desired: { state: DesiredState; retain: boolean; at: number }[] = [];
  private sessionId = '';

  private constructor(
    readonly deviceId: string,
    private readonly password: string,
  ) {}

  static async enroll(cp: ControlPlane, token: string, name: string, labels: Record<string, string> = {}): Promise<FakeDevice> {
    const minted = await api<{ token: string }>(cp, '/api/v1/enrollment-tokens', { token, body: { labels, uses: 1 } });
    if (minted.status !== 201) throw new Error(`enrollment token: ${minted.status} ${JSON.stringify(minted.body)}`);
    const enrolled = await api<{ deviceId: string; mqtt: { password: string } }>(cp, '/api/v1/enroll', { body: { token: minted.body.token, name } });
    if (enrolled.status !== 201) throw new Error(`enroll: ${enrolled.status} ${JSON.stringify(enrolled.body)}`);
    return new FakeDevice(enrolled.body.deviceId, enrolled.body.mqtt.password);
  }

  /** Connects, subscribes to its desired state, says hello with `hardware` and goes online. */
  async start(cp: ControlPlane, hardware: Partial<Hardware> = {}, onDisk: { name: string; sha256: string }[] = []): Promise<void> {
    this.sessionId = `sess-${randomUUID()}`;
    const will = lastWill(this.deviceId, this.sessionId, Date.now());
    const client = await connectAsync(`mqtt://127.0.0.1:${cp.mqttPort}`, {
      clientId: this.deviceId,
      username: this.deviceId,
      password: this.password,
      clean: true,
      keepalive: 5,
      reconnectPeriod: 0,
      will: { topic: will.topic, payload: Buffer.from(will.payload), qos: will.qos, retain: will.retain },
    });
    (client.stream as Socket).setNoDelay?.(true);
    client.on('error', () => undefined);
    client.on('message', (topic, payload, packet) => {
      if (topic !== topics.desired(this.deviceId) || payload.length === 0) return;
      const decoded = decode('desired', payload);
      if (decoded.ok) this.desired.push({ state: decoded.value, retain: packet.retain, at: Date.now() });
    });
    this.client = client;
    await client.subscribeAsync(topics.desired(this.deviceId), { qos: 1 });
    const hello = makeHello({
      ts: Date.now(),
      sessionId: this.sessionId,
      hardware: makeHardware({ gpus: [], ...hardware }),
      models: onDisk.map((m) => ({ name: m.name, fileName: `${m.name}.gguf`, sha256: m.sha256, sizeBytes: 50 * MiB })),
      labels: {},
    });
    await client.publishAsync(topics.hello(this.deviceId), encode('hello', hello), { qos: 1 });
    await client.publishAsync(topics.status(this.deviceId), encode('status', makeStatus({ ts: Date.now(), sessionId: this.sessionId, state: 'online' })), {
      qos: 1,
      retain: true,
    });
  }

  /** The newest desired state received. */
  get latest(): DesiredState | undefined {
    return this.desired.at(-1)?.state;
  }

  /** Model names of the newest desired state. */
  get models(): string[] {
    return (this.latest?.models ?? []).map((m) => m.name).sort();
  }

  /** [P-3.5] A model state snapshot: every named model ready and loaded. */
  async reportReady(models: { name: string; sha256: string }[]): Promise<void> {
    const now = Date.now();
    const version = this.latest?.version ?? 0;
    const statuses: ModelStatus[] = models.map((m) => ({ name: m.name, sha256: m.sha256, desiredVersion: version, since: now, state: 'ready', loaded: true }));
    if (!this.client) throw new Error('not connected');
    await this.client.publishAsync(topics.modelState(this.deviceId), encode('modelState', { v: 1, ts: now, desiredVersion: version, models: statuses }), {
      qos: 1,
      retain: true,
    });
  }

  /** Subscribes again and returns what the broker delivers as retained (the desired state a reconnecting agent gets). */
  async retained(): Promise<DesiredState | undefined> {
    if (!this.client) throw new Error('not connected');
    const before = this.desired.length;
    await this.client.unsubscribeAsync(topics.desired(this.deviceId));
    await this.client.subscribeAsync(topics.desired(this.deviceId), { qos: 1 });
    for (let i = 0; i < 100 && !this.desired.slice(before).some((d) => d.retain); i++) await new Promise((r) => setTimeout(r, 20));
    return this.desired.slice(before).find((d) => d.retain)?.state;
  }

  /** A dead box: the socket goes away without DISCONNECT, so the broker publishes the last will (offline). */
  kill(): void {
    this.client?.stream.destroy();
    this.client?.end(true);
    this.client = undefined;
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true).catch(() => undefined);
  }
}
