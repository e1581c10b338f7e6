// A light simulated fleet for the benchmarks: raw MQTT 3.1.1 clients (mqtt-packet, a few KB each) speaking the
// device protocol of libs/protocol: persistent session, keepalive, the agent's last will and subscriptions, hello,
// retained status, telemetry as outbox entries resent after 30 s without an ack, desired states answered
// downloading -> ready. In `mosquitto` mode the same clients send the same payloads anonymously, and a PUBACK stands in
// for the outbox ack (nobody else is there to answer).
//
// A bridge: the project's simulator (tools/src/sim, `startSimFleet`) replaces this once it lands; the suites only use
// the small surface below (join, crash, silence, stats, stop).
import mqttPacket from 'mqtt-packet';
import { randomUUID } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { PROTOCOL_VERSION, agentSubscriptions, lastWill, parseTopic, topicFor, type Hello, type ModelStateReport, type Telemetry } from '@flotilla/protocol';

export type FleetMode = 'flotilla' | 'mosquitto';

export interface LightDeviceIdentity {
  deviceId: string;
  username?: string;
  password?: string;
}

export interface LightFleetOptions {
  host: string;
  port: number;
  mode: FleetMode;
  keepaliveSeconds?: number;
  telemetryIntervalMs?: number;
  /** resend unacknowledged outbox entries after this long (the agent's 30 s) */
  resendAfterMs?: number;
  /** CONNECTs in flight at once while joining */
  connectConcurrency?: number;
  /** devices per loopback source address (127.x.y.z), so per-address limits apply as they would to real boxes */
  devicesPerAddress?: number;
  /** reconnect delay after a lost connection: min..max, doubled per failed attempt, jittered */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** simulated download + load time of a desired model, ms */
  modelLoadMs?: number;
  /** the control plane's base URL (the project simulator's engine wants it; the light fleet dials host:port only) */
  controlPlaneUrl?: string;
  /** index of this fleet's first device in the whole simulated fleet (worker processes), for source addresses */
  indexOffset?: number;
}

export interface LightFleetStats {
  devices: number;
  connected: number;
  /** devices that had a CONNACK at least once */
  everConnected: number;
  /** CONNECT attempts that did not end in an accepted CONNACK (refused, closed, timed out) */
  failedConnects: number;
  failedByReason: Record<string, number>;
  /** connections lost after a CONNACK (not counting crash/silence/stop) */
  dropped: number;
  /** distinct telemetry entries created */
  telemetryOffered: number;
  /** distinct entries acknowledged (outbox ack in flotilla mode, PUBACK in mosquitto mode) */
  telemetryAcked: number;
  /** entries sent again (resend timer, resend flag, or reconnect replay) */
  resends: number;
  pubacks: number;
  desiredReceived: number;
}

interface Entry {
  seq: number;
  payload: Buffer;
  sentAt: number;
}

const { generate, parser: makeParser } = mqttPacket;

export class LightDevice {
  socket: Socket | undefined;
  connected = false;
  everConnected = false;
  /** crashed or silenced by the scenario: no reconnect */
  parked = false;
  silenced = false;
  sessionId = randomUUID();
  seq = 0;
  ackedSeq = 0;
  unacked: Entry[] = [];
  nextTelemetryAt = 0;
  lastSentAt = 0;
  packetId = 0;
  attempt = 0;
  connectedAt: number | undefined;
  firstConnectedAt: number | undefined;
  /** desired versions seen, with the time each arrived */
  desired = new Map<number, number>();
  /** model names seen in desired states, with the time each first arrived */
  models = new Map<string, number>();
  /** PUBLISH packet id -> seq of the telemetry entry (mosquitto mode acks by PUBACK) */
  inflight = new Map<number, number>();

  constructor(
    readonly fleet: LightFleet,
    readonly identity: LightDeviceIdentity,
    readonly localAddress: string,
  ) {}

  get deviceId(): string {
    return this.identity.deviceId;
  }

  send(packet: mqttPacket.Packet): void {
    const s = this.socket;
    if (!s || s.destroyed || this.silenced) return;
    s.write(generate(packet));
    this.lastSentAt = Date.now();
  }

  nextId(): number {
    this.packetId = (this.packetId % 65535) + 1;
    return this.packetId;
  }

  publish(topic: string, payload: Buffer | string, retain: boolean): number {
    const messageId = this.nextId();
    this.send({ cmd: 'publish', topic, payload, qos: 1, retain, dup: false, messageId });
    return messageId;
  }
}

/** The devices of one process, driven by one timer (telemetry, keepalive and resends), not one timer per device. */
export class LightFleet {
  readonly devices: LightDevice[] = [];
  private readonly o: Required<LightFleetOptions>;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private quiet = false;
  private readonly counters = { failedConnects: 0, dropped: 0, offered: 0, acked: 0, resends: 0, pubacks: 0, desired: 0 };
  private readonly failedByReason: Record<string, number> = {};
  private readonly hello: Omit<Hello, 'sessionId' | 'ts' | 'outbox'>;
  /** called when a device gets a desired state (after it was recorded) */
  onDesired: ((device: LightDevice, version: number) => void) | undefined;
  /** called on every model-state report a device sends */
  onModelState: ((device: LightDevice, report: ModelStateReport) => void) | undefined;
  /** called on every accepted CONNACK */
  onConnected: ((device: LightDevice) => void) | undefined;

  constructor(options: LightFleetOptions) {
    this.o = {
      keepaliveSeconds: 5,
      telemetryIntervalMs: 5000,
      resendAfterMs: 30_000,
      connectConcurrency: 200,
      devicesPerAddress: 200,
      reconnectMinMs: 500,
      reconnectMaxMs: 30_000,
      modelLoadMs: 50,
      indexOffset: 0,
      controlPlaneUrl: '',
      ...options,
    };
    this.hello = {
      v: PROTOCOL_VERSION,
      agentVersion: 'bench-sim',
      hardware: {
        cpu: { model: 'Simulated CPU', cores: 4 },
        memory: { totalBytes: 8 * 1024 ** 3, freeBytes: 6 * 1024 ** 3 },
        disk: { freeBytes: 100 * 1024 ** 3, totalBytes: 200 * 1024 ** 3 },
        gpus: [],
        os: { platform: 'linux', arch: 'x64', release: '6.1', hostname: 'sim' },
      },
      runtimes: [{ name: 'node-llama-cpp', version: '3.22.1', gpuBackend: 'cpu' }],
      models: [],
      labels: { sim: 'bench' },
    };
  }

  get options(): Readonly<Required<LightFleetOptions>> {
    return this.o;
  }

  /** Adds devices and connects them (at most `connectConcurrency` CONNECTs in flight); resolves when each got a first answer. */
  async join(identities: readonly LightDeviceIdentity[]): Promise<void> {
    const start = this.o.indexOffset + this.devices.length;
    const added = identities.map((id, i) => new LightDevice(this, id, sourceAddress(start + i, this.o.devicesPerAddress)));
    this.devices.push(...added);
    this.ensureTimer();
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(this.o.connectConcurrency, added.length) }, async () => {
        while (next < added.length) {
          const d = added[next++];
          if (d) await this.connect(d);
        }
      }),
    );
  }

  stats(): LightFleetStats {
    let connected = 0;
    let ever = 0;
    let desired = 0;
    for (const d of this.devices) {
      if (d.connected) connected++;
      if (d.everConnected) ever++;
      desired += d.desired.size;
    }
    return {
      devices: this.devices.length,
      connected,
      everConnected: ever,
      failedConnects: this.counters.failedConnects,
      failedByReason: { ...this.failedByReason },
      dropped: this.counters.dropped,
      telemetryOffered: this.counters.offered,
      telemetryAcked: this.counters.acked,
      resends: this.counters.resends,
      pubacks: this.counters.pubacks,
      desiredReceived: desired,
    };
  }

  /** Destroys the sockets of `k` connected devices (no DISCONNECT: the broker publishes their will). */
  crash(k: number): { deviceId: string; at: number }[] {
    return this.pick(k).map((d) => {
      d.parked = true;
      d.socket?.destroy();
      return { deviceId: d.deviceId, at: Date.now() };
    });
  }

  /** `k` connected devices stop sending anything (no telemetry, no PINGREQ) but keep their socket open. */
  silence(k: number): { deviceId: string; at: number }[] {
    return this.pick(k).map((d) => {
      d.parked = true;
      d.silenced = true;
      return { deviceId: d.deviceId, at: Date.now() };
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    for (const d of this.devices) {
      d.parked = true;
      d.socket?.destroy();
    }
    await new Promise((done) => setImmediate(done));
  }

  /** When each device first got each model in a desired state: [deviceId, model, epoch ms]. */
  modelArrivals(): [string, string, number][] {
    const out: [string, string, number][] = [];
    for (const d of this.devices) for (const [model, at] of d.models) out.push([d.deviceId, model, at]);
    return out;
  }

  /** Stops creating telemetry entries (keepalive, acks and resends go on), so stored can be compared with offered. */
  quiesce(): void {
    this.quiet = true;
  }

  private pick(k: number): LightDevice[] {
    const candidates = this.devices.filter((d) => d.connected && !d.parked);
    // spread over the fleet, deterministic
    const step = Math.max(1, Math.floor(candidates.length / Math.max(1, k)));
    const out: LightDevice[] = [];
    for (let i = 0; i < candidates.length && out.length < k; i += step) {
      const d = candidates[i];
      if (d) out.push(d);
    }
    return out;
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), 250);
  }

  /** Telemetry due, keepalive PINGREQs, and resends of entries unacknowledged for `resendAfterMs`. */
  private tick(): void {
    const now = Date.now();
    const keepaliveMs = this.o.keepaliveSeconds * 1000;
    for (const d of this.devices) {
      if (!d.connected || d.silenced) continue;
      if (!this.quiet && now >= d.nextTelemetryAt) {
        d.nextTelemetryAt += this.o.telemetryIntervalMs;
        if (d.nextTelemetryAt < now) d.nextTelemetryAt = now + this.o.telemetryIntervalMs;
        this.sendTelemetry(d, now);
      }
      const oldest = d.unacked[0];
      if (oldest && now - oldest.sentAt >= this.o.resendAfterMs) this.resend(d, now);
      if (now - d.lastSentAt >= keepaliveMs - 500) d.send({ cmd: 'pingreq' });
    }
  }

  private sendTelemetry(d: LightDevice, now: number): void {
    const seq = ++d.seq;
    const t: Telemetry = {
      v: PROTOCOL_VERSION,
      seq,
      ts: now,
      windowMs: this.o.telemetryIntervalMs,
      cpu: { percent: 12.5 },
      memory: { usedBytes: 2 * 1024 ** 3, totalBytes: 8 * 1024 ** 3 },
      gpus: [],
      disk: { freeBytes: 100 * 1024 ** 3, modelsBytes: 0 },
      loadedModels: [],
      inference: { activeRequests: 0, queuedRequests: 0, completedRequests: 0, failedRequests: 0, generatedTokens: 0, tokensPerSecond: 0 },
      draining: false,
    };
    const entry: Entry = { seq, payload: Buffer.from(JSON.stringify(t)), sentAt: now };
    d.unacked.push(entry);
    this.counters.offered++;
    const id = d.publish(topicFor('telemetry', d.deviceId), entry.payload, false);
    if (this.o.mode === 'mosquitto') d.inflight.set(id, seq);
  }

  /** Sends every unacknowledged entry again, in seq order. */
  private resend(d: LightDevice, now: number): void {
    for (const e of d.unacked) {
      e.sentAt = now;
      this.counters.resends++;
      const id = d.publish(topicFor('telemetry', d.deviceId), e.payload, false);
      if (this.o.mode === 'mosquitto') d.inflight.set(id, e.seq);
    }
  }

  private ack(d: LightDevice, upToSeq: number): void {
    if (upToSeq > d.ackedSeq) d.ackedSeq = upToSeq;
    let n = 0;
    while (n < d.unacked.length && (d.unacked[n]?.seq ?? Infinity) <= upToSeq) n++;
    if (n > 0) {
      d.unacked.splice(0, n);
      this.counters.acked += n;
    }
  }

  private connect(d: LightDevice): Promise<void> {
    return new Promise<void>((settled) => {
      if (this.stopped || d.parked) return settled();
      let answered = false;
      const answer = (): void => {
        if (answered) return;
        answered = true;
        settled();
      };
      const fail = (reason: string): void => {
        if (!answered) {
          this.counters.failedConnects++;
          this.failedByReason[reason] = (this.failedByReason[reason] ?? 0) + 1;
        }
      };
      d.sessionId = randomUUID();
      const socket = connect({ host: this.o.host, port: this.o.port, localAddress: d.localAddress, noDelay: true });
      d.socket = socket;
      const timeout = setTimeout(() => {
        fail('timeout');
        answer();
        socket.destroy();
      }, 10_000);
      const parser = makeParser({ protocolVersion: 4 });
      socket.on('data', (chunk: Buffer) => parser.parse(chunk));
      socket.on('error', (error: NodeJS.ErrnoException) => {
        if (!answered) fail(error.code ?? 'error');
        answer();
      });
      socket.on('close', () => {
        clearTimeout(timeout);
        if (!answered) fail('closed');
        answer();
        if (d.socket !== socket) return;
        if (d.connected && !d.parked && !this.stopped) this.counters.dropped++;
        d.connected = false;
        d.inflight.clear();
        if (d.parked || this.stopped) return;
        const delay = Math.min(this.o.reconnectMaxMs, this.o.reconnectMinMs * 2 ** d.attempt++) * (0.5 + Math.random() * 0.5);
        // connect() never rejects: every failure is counted and ends in a reconnect
        setTimeout(() => {
          this.connect(d).catch(() => undefined);
        }, delay).unref();
      });
      socket.on('connect', () => {
        const will = lastWill(d.deviceId, d.sessionId, Date.now(), 'bench-sim');
        d.send({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: false,
          clientId: d.deviceId,
          keepalive: this.o.keepaliveSeconds,
          ...(d.identity.username ? { username: d.identity.username, password: Buffer.from(d.identity.password ?? '') } : {}),
          will: { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: true },
        });
      });
      parser.on('packet', (packet: mqttPacket.Packet) => {
        if (d.socket !== socket) return;
        switch (packet.cmd) {
          case 'connack':
            clearTimeout(timeout);
            if (packet.returnCode !== 0) {
              fail(`connack ${packet.returnCode ?? '?'}`);
              answer();
              socket.destroy();
              return;
            }
            answer();
            this.established(d);
            return;
          case 'publish':
            if (packet.qos > 0 && packet.messageId !== undefined) d.send({ cmd: 'puback', messageId: packet.messageId });
            this.inbound(d, packet.topic, typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload);
            return;
          case 'puback': {
            this.counters.pubacks++;
            if (this.o.mode === 'mosquitto' && packet.messageId !== undefined) {
              const seq = d.inflight.get(packet.messageId);
              if (seq !== undefined) {
                d.inflight.delete(packet.messageId);
                this.ack(d, seq);
              }
            }
            return;
          }
          default:
            return;
        }
      });
      parser.on('error', () => socket.destroy());
    });
  }

  private established(d: LightDevice): void {
    const now = Date.now();
    d.connected = true;
    d.attempt = 0;
    d.connectedAt = now;
    if (!d.everConnected) {
      d.everConnected = true;
      d.firstConnectedAt = now;
      // first telemetry somewhere in the first interval: devices do not tick in lockstep
      d.nextTelemetryAt = now + Math.random() * this.o.telemetryIntervalMs;
    }
    d.send({ cmd: 'subscribe', messageId: d.nextId(), subscriptions: agentSubscriptions(d.deviceId).map((topic) => ({ topic, qos: 1 as const })) });
    const hello: Hello = { ...this.hello, ts: now, sessionId: d.sessionId, outbox: { lastSeq: d.seq } };
    d.publish(topicFor('hello', d.deviceId), JSON.stringify(hello), false);
    d.publish(topicFor('status', d.deviceId), JSON.stringify({ v: PROTOCOL_VERSION, state: 'online', sessionId: d.sessionId, ts: now, reason: 'startup', agentVersion: 'bench-sim' }), true);
    // what was not acknowledged on the previous connection goes again, in order
    if (d.unacked.length > 0) this.resend(d, now);
    this.onConnected?.(d);
  }

  private inbound(d: LightDevice, topic: string, payload: Buffer): void {
    if (payload.length === 0) return;
    const parsed = parseTopic(topic);
    if (!parsed) return;
    if (parsed.kind === 'outboxAck') {
      const ack = JSON.parse(payload.toString()) as { upToSeq: number; resend?: boolean };
      this.ack(d, ack.upToSeq);
      if (ack.resend && d.unacked.length > 0) this.resend(d, Date.now());
      return;
    }
    if (parsed.kind === 'desired') {
      const desired = JSON.parse(payload.toString()) as { version: number; models: { name: string; sha256: string; sizeBytes: number; loaded: boolean }[] };
      if (d.desired.has(desired.version)) return;
      const now = Date.now();
      d.desired.set(desired.version, now);
      for (const m of desired.models) if (!d.models.has(m.name)) d.models.set(m.name, now);
      this.counters.desired++;
      this.onDesired?.(d, desired.version);
      this.answerDesired(d, desired);
    }
  }

  /** downloading at once, ready after the simulated load time (each report names every desired model). */
  private answerDesired(d: LightDevice, desired: { version: number; models: { name: string; sha256: string; sizeBytes: number; loaded: boolean }[] }): void {
    const report = (state: 'downloading' | 'ready'): void => {
      if (!d.connected || d.silenced) return;
      const now = Date.now();
      const r: ModelStateReport = {
        v: PROTOCOL_VERSION,
        ts: now,
        desiredVersion: desired.version,
        models: desired.models.map((m) =>
          state === 'ready'
            ? { name: m.name, sha256: m.sha256, desiredVersion: desired.version, since: now, state: 'ready' as const, loaded: m.loaded }
            : { name: m.name, sha256: m.sha256, desiredVersion: desired.version, since: now, state: 'downloading' as const, receivedBytes: 0, totalBytes: m.sizeBytes },
        ),
      };
      d.publish(topicFor('modelState', d.deviceId), JSON.stringify(r), true);
      this.onModelState?.(d, r);
    };
    if (desired.models.length === 0) {
      report('ready');
      return;
    }
    report('downloading');
    setTimeout(() => report('ready'), this.o.modelLoadMs).unref();
  }
}

/** 127.x.y.z source addresses, `perAddress` devices each, never 127.0.0.1. */
export function sourceAddress(index: number, perAddress: number): string {
  const a = Math.floor(index / Math.max(1, perAddress));
  return `127.${10 + (Math.floor(a / (254 * 256)) % 200)}.${Math.floor(a / 254) % 256}.${(a % 254) + 1}`;
}

/** `n` identities for mosquitto mode (no enrollment): ids in the protocol's device-id pattern. */
export function anonymousIdentities(n: number, prefix = 'bench'): LightDeviceIdentity[] {
  const run = Date.now().toString(36);
  return Array.from({ length: n }, (_, i) => ({ deviceId: `${prefix}-${run}-${i}` }));
}
