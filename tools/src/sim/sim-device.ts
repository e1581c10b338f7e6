import { randomUUID } from 'node:crypto';
import {
  PROTOCOL_VERSION,
  TOPIC_SPECS,
  agentSubscriptions,
  decode,
  encode,
  isRetryable,
  lastWill,
  parseTopic,
  topicFor,
  type DesiredState,
  type ErrorCode,
  type Hardware,
  type InferenceRequest,
  type MessageOf,
  type ModelStatus,
  type TopicKind,
} from '@flotilla/protocol';
import { LightMqttClient, type MqttClientHandler } from './mqtt-client.js';
import type { LatencyRecorder } from './stats.js';

/** The version simulated devices announce (hello, status, will). */
export const SIM_AGENT_VERSION = '0.1.0-sim';

/** The box a simulated device claims to be (hello and enrollment). */
export interface HardwareProfile {
  cpuModel: string;
  cores: number;
  memoryBytes: number;
  diskBytes: number;
  gpus: { name: string; vendor?: string; vramBytes: number }[];
  platform: string;
  arch: string;
  /** labels sent in hello (the agent's local config labels) */
  labels: Record<string, string>;
}

export const DEFAULT_HARDWARE: HardwareProfile = {
  cpuModel: 'Simulated CPU',
  cores: 4,
  memoryBytes: 8 * 1024 ** 3,
  diskBytes: 64 * 1024 ** 3,
  gpus: [],
  platform: 'linux',
  arch: 'x64',
  labels: {},
};

/** How simulated devices behave; one object shared by a whole fleet (read on every use, so it can change live). */
export interface SimBehaviour {
  keepaliveSeconds: number;
  telemetryIntervalMs: number;
  /** held outbox entries are sent again when the oldest went this long without an ack; 0: only on reconnect/resend */
  resendAfterMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** a connection without CONNACK after this long is dropped and counted as a failed connect (the agent: 10 s) */
  connectTimeoutMs: number;
  /** simulated download time per model (progress reported at quarters) */
  downloadMs: number;
  loadMs: number;
  /** probability that a model fails (download or load); reported as `failed` with `failureCode` */
  modelFailureRate: number;
  modelFailureCode: ErrorCode;
  /** synthetic inference */
  ttftMs: number;
  tokensPerSecond: number;
  /** probability that an inference request answers GENERATION_FAILED */
  inferenceErrorRate: number;
  /** tokens generated when the request has no maxTokens */
  defaultMaxTokens: number;
  /**
   * `control-plane`: the Flotilla protocol with acks (an enrolled device); `plain`: the same clients and payloads for
   * a plain broker (e.g. Mosquitto with allow_anonymous): no credentials, entries forgotten once PUBACKed.
   */
  mode: 'control-plane' | 'plain';
  hardware: HardwareProfile;
}

export const DEFAULT_BEHAVIOUR: SimBehaviour = {
  keepaliveSeconds: 5,
  telemetryIntervalMs: 5000,
  resendAfterMs: 30_000,
  reconnectMinMs: 500,
  reconnectMaxMs: 30_000,
  connectTimeoutMs: 10_000,
  downloadMs: 2000,
  loadMs: 500,
  modelFailureRate: 0,
  modelFailureCode: 'DOWNLOAD_FAILED',
  ttftMs: 50,
  tokensPerSecond: 50,
  inferenceErrorRate: 0,
  defaultMaxTokens: 16,
  mode: 'control-plane',
  hardware: DEFAULT_HARDWARE,
};

/** Counters a fleet aggregates over its devices (one object, shared: devices only increment). */
export interface SimCounters {
  connects: number;
  /** connection attempts that did not end in an accepted CONNACK (refused, timed out, closed, unreachable) */
  failedConnects: number;
  /** of those, refused with a CONNACK return code */
  connectsRefused: number;
  /** of those, no CONNACK within connectTimeoutMs */
  connectTimeouts: number;
  reconnects: number;
  connectionsLost: number;
  helloAcked: number;
  entriesSent: number;
  entriesAcked: number;
  entriesResent: number;
  resendRequests: number;
  publishes: number;
  pubacks: number;
  inferenceServed: number;
  inferenceFailed: number;
  inferenceCancelled: number;
  malformed: number;
}

export function newCounters(): SimCounters {
  return {
    connects: 0,
    failedConnects: 0,
    connectsRefused: 0,
    connectTimeouts: 0,
    reconnects: 0,
    connectionsLost: 0,
    helloAcked: 0,
    entriesSent: 0,
    entriesAcked: 0,
    entriesResent: 0,
    resendRequests: 0,
    publishes: 0,
    pubacks: 0,
    inferenceServed: 0,
    inferenceFailed: 0,
    inferenceCancelled: 0,
    malformed: 0,
  };
}

/** What a device shares with its fleet: behaviour, counters, latency recorders, where to dial. */
export interface SimContext {
  behaviour: SimBehaviour;
  counters: SimCounters;
  latency: { connect: LatencyRecorder; helloAck: LatencyRecorder; entryAck: LatencyRecorder; inference: LatencyRecorder };
  /** MQTT host/port every device dials (the broker, or a proxy in front of it) */
  broker: { host: string; port: number };
  random: () => number;
  /** no new telemetry entries while set (held ones are still sent and resent): lets a run drain its outboxes */
  telemetryPaused?: boolean;
}

export type SimDeviceState = 'idle' | 'connecting' | 'connected' | 'waiting' | 'crashed' | 'silenced' | 'stopped';

interface HeldEntry {
  seq: number;
  /** encoded by the protocol codec, without prevSeq (added when sent) */
  payload: string;
  kind: 'telemetry';
  /** Date.now() when first sent (0: not yet) */
  firstSentAt: number;
  /** Date.now() when last sent on the current connection (0: not on this one) */
  sentAt: number;
}

interface ModelJob {
  status: ModelStatus;
  sizeBytes: number;
  timer: NodeJS.Timeout | undefined;
  /** loaded when ready */
  loaded: boolean;
}

/**
 * One simulated device speaking the agent's protocol on a light MQTT client: persistent session (clean: false, client
 * id = device id), the agent's last will and subscriptions; on every connection SUBSCRIBE, hello, retained status,
 * model states, then the outbox; telemetry as outbox entries (seq, prevSeq, acks, `resend`); desired state ->
 * pending -> downloading -> verifying -> loading -> ready (or failed); synthetic inference with chunks, result, error
 * and cancel. Keepalive, telemetry and resends are driven by the fleet's one tick (`tick`).
 */
export class SimDevice implements MqttClientHandler {
  state: SimDeviceState = 'idle';
  readonly client: LightMqttClient;
  sessionId = '';
  /** the hello of this connection was acknowledged (outboxAck carrying its sessionId) */
  helloAcked = false;
  private connectStartedAt = 0;
  private helloSentAt = 0;
  private everConnected = false;
  /** when the first desired state arrived (ms epoch; 0: none yet) */
  desiredAt = 0;
  /** model name -> when it first appeared in a desired state (ms epoch): delivery latency of a placement */
  readonly modelArrivals = new Map<string, number>();
  private attempt = 0;
  private reconnectAt = 0;
  private nextTelemetryAt = 0;
  private lastSeq = 0;
  private ackedSeq = 0;
  private held: HeldEntry[] = [];
  private desiredVersion = 0;
  /** inference in the current telemetry window (reported and reset by each sample) */
  private windowCompleted = 0;
  private windowFailed = 0;
  private windowTokens = 0;
  private models: Map<string, ModelJob> | undefined;
  private inference: Map<string, NodeJS.Timeout> | undefined;

  constructor(
    readonly index: number,
    readonly deviceId: string,
    private readonly credentials: { username?: string; password?: string },
    readonly localAddress: string | undefined,
    private readonly ctx: SimContext,
  ) {
    this.client = new LightMqttClient(this);
  }

  /** had an accepted CONNACK at least once */
  get hasConnected(): boolean {
    return this.everConnected;
  }

  /** entries held (not acknowledged) */
  get heldEntries(): number {
    return this.held.length;
  }

  get highestSeq(): number {
    return this.lastSeq;
  }

  get acknowledgedSeq(): number {
    return this.ackedSeq;
  }

  /** states of the models this device works on (name -> state) */
  modelStates(): ModelStatus[] {
    return this.models ? [...this.models.values()].map((job) => job.status) : [];
  }

  /** starts (or restarts after crash/silence) the device: connects now, telemetry from the next tick */
  start(now = Date.now()): void {
    if (this.state === 'connecting' || this.state === 'connected' || this.state === 'waiting') return;
    this.attempt = 0;
    this.nextTelemetryAt = now + Math.floor(this.ctx.random() * this.ctx.behaviour.telemetryIntervalMs);
    this.connect(now);
    // Model work cut short by a crash or silence starts over (a restarted agent re-plans from its desired state).
    if (this.models) {
      for (const job of this.models.values()) {
        if (job.timer === undefined && job.status.state !== 'ready' && job.status.state !== 'failed') this.advanceModel(job, job.sizeBytes, 0);
      }
    }
  }

  /** the socket is destroyed without DISCONNECT (the broker fires the will); the device stays dead until start() */
  crash(): void {
    this.state = 'crashed';
    this.stopWork();
    this.client.destroy();
  }

  /** nothing is sent any more (no telemetry, no PINGREQ, no PUBACK), the socket stays open; until start() */
  silence(): void {
    this.state = 'silenced';
    this.stopWork();
    this.client.muted = true;
  }

  /** as the agent on SIGTERM: status draining, status offline, DISCONNECT (the will is not fired) */
  async stop(timeoutMs = 2000): Promise<void> {
    const wasConnected = this.state === 'connected' && this.client.connected;
    this.state = 'stopped';
    this.stopWork();
    if (wasConnected) {
      this.publishStatus('draining', 'shutdown');
      this.publishStatus('offline', 'shutdown');
      const deadline = Date.now() + timeoutMs;
      while (this.client.unacked > 0 && this.client.connected && Date.now() < deadline) await new Promise((done) => setTimeout(done, 10));
      this.client.disconnect();
    } else {
      this.client.destroy();
    }
  }

  /** one step of the fleet's shared timer: reconnect, keepalive, telemetry, resend */
  tick(now: number): void {
    const behaviour = this.ctx.behaviour;
    switch (this.state) {
      case 'waiting':
        if (now >= this.reconnectAt) this.connect(now);
        return;
      case 'connected':
        if (!this.client.keepaliveTick(now)) return;
        break;
      case 'connecting':
        if (now - this.connectStartedAt >= behaviour.connectTimeoutMs) {
          this.ctx.counters.connectTimeouts++;
          this.client.destroy();
          return;
        }
        break;
      default:
        return;
    }
    if (now >= this.nextTelemetryAt && !this.ctx.telemetryPaused) {
      this.nextTelemetryAt = now + behaviour.telemetryIntervalMs;
      this.enqueueTelemetry(now);
    }
    const oldest = this.held[0];
    if (this.state === 'connected' && behaviour.resendAfterMs > 0 && oldest && oldest.sentAt > 0 && now - oldest.sentAt >= behaviour.resendAfterMs) {
      this.flush(true);
    }
  }

  // --- MQTT client events ----------------------------------------------------------------------------------------

  onConnack(returnCode: number): void {
    if (returnCode !== 0) {
      this.ctx.counters.connectsRefused++;
      return; // the client closes; onClose counts it as a failed connect
    }
    const now = Date.now();
    this.ctx.latency.connect.record(now - this.connectStartedAt);
    this.ctx.counters.connects++;
    if (this.everConnected) this.ctx.counters.reconnects++;
    this.everConnected = true;
    this.attempt = 0;
    if (this.state !== 'connecting') return;
    this.state = 'connected';
    // As the agent: subscribe, hello, retained status, model states, then the outbox.
    this.client.subscribe(agentSubscriptions(this.deviceId), 1);
    this.helloSentAt = now;
    this.publish('hello', {
      v: PROTOCOL_VERSION,
      ts: now,
      sessionId: this.sessionId,
      agentVersion: SIM_AGENT_VERSION,
      hardware: this.hardware(),
      runtimes: [{ name: 'flotilla-sim', version: SIM_AGENT_VERSION, gpuBackend: this.ctx.behaviour.hardware.gpus.length > 0 ? 'cuda' : 'cpu' }],
      models: [],
      outbox: { lastSeq: this.lastSeq },
      ...(Object.keys(this.ctx.behaviour.hardware.labels).length > 0 ? { labels: this.ctx.behaviour.hardware.labels } : {}),
    });
    this.publishStatus('online', 'startup');
    if (this.models || this.desiredVersion > 0) this.publishModelState();
    this.flush(true);
  }

  onPublish(topic: string, payload: Buffer): void {
    if (this.state !== 'connected' || payload.length === 0) return;
    // The device's own subtree only (the broker enforces it; checked as the agent does).
    const parsed = parseTopic(topic);
    if (!parsed || parsed.deviceId !== this.deviceId || TOPIC_SPECS[parsed.kind].direction !== 'cp-to-agent') {
      this.ctx.counters.malformed++;
      return;
    }
    switch (parsed.kind) {
      case 'outboxAck':
        return this.onOutboxAck(payload);
      case 'desired':
        return this.onDesired(payload);
      case 'inferenceRequest':
        return this.onInferenceRequest(payload);
      case 'inferenceCancel':
        return this.onInferenceCancel(payload);
      default:
        return; // commands: not simulated
    }
  }

  onPuback(): void {
    this.ctx.counters.pubacks++;
  }

  onClose(established: boolean): void {
    this.helloAcked = false;
    for (const entry of this.held) entry.sentAt = 0;
    if (established) this.ctx.counters.connectionsLost++;
    else this.ctx.counters.failedConnects++;
    this.stopInference();
    if (this.state === 'connected' || this.state === 'connecting') this.scheduleReconnect(Date.now());
    else if (this.state === 'silenced') this.client.muted = false;
  }

  // --- protocol --------------------------------------------------------------------------------------------------

  private connect(now: number): void {
    this.state = 'connecting';
    this.connectStartedAt = now;
    this.helloAcked = false;
    // A new session id per connection; its last will names it (as the agent's link does).
    this.sessionId = randomUUID();
    // Plain mode keeps the will too: a broker compared with the control plane holds the same state per client.
    const will = lastWill(this.deviceId, this.sessionId, now, SIM_AGENT_VERSION);
    this.client.connect({
      host: this.ctx.broker.host,
      port: this.ctx.broker.port,
      ...(this.localAddress ? { localAddress: this.localAddress } : {}),
      clientId: this.deviceId,
      ...(this.credentials.username === undefined ? {} : { username: this.credentials.username }),
      ...(this.credentials.password === undefined ? {} : { password: this.credentials.password }),
      keepaliveSeconds: this.ctx.behaviour.keepaliveSeconds,
      clean: false,
      will: { topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain },
    });
  }

  private scheduleReconnect(now: number): void {
    const { reconnectMinMs, reconnectMaxMs } = this.ctx.behaviour;
    // Full jitter, as the agent: uniform in [min, min(max, min * 2^attempt)].
    const ceiling = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** Math.min(this.attempt++, 20));
    this.reconnectAt = now + Math.round(reconnectMinMs + (ceiling - reconnectMinMs) * this.ctx.random());
    this.state = 'waiting';
  }

  private publish<K extends TopicKind>(kind: K, message: MessageOf<K>): void {
    this.publishRaw(kind, encode(kind, message));
  }

  private publishRaw(kind: TopicKind, payload: string): void {
    const spec = TOPIC_SPECS[kind];
    if (this.client.publish(topicFor(kind, this.deviceId), payload, spec.qos, spec.retained) >= 0) this.ctx.counters.publishes++;
  }

  private publishStatus(state: 'online' | 'draining' | 'offline', reason: 'startup' | 'shutdown'): void {
    this.publish('status', { v: PROTOCOL_VERSION, state, sessionId: this.sessionId, ts: Date.now(), reason, agentVersion: SIM_AGENT_VERSION });
  }

  private hardware(): Hardware {
    const hw = this.ctx.behaviour.hardware;
    return {
      cpu: { model: hw.cpuModel, cores: hw.cores },
      memory: { totalBytes: hw.memoryBytes, freeBytes: Math.floor(hw.memoryBytes * 0.6) },
      disk: { freeBytes: Math.floor(hw.diskBytes * 0.8), totalBytes: hw.diskBytes },
      gpus: hw.gpus.map((gpu) => ({ name: gpu.name, ...(gpu.vendor ? { vendor: gpu.vendor } : {}), vramBytes: gpu.vramBytes, vramFreeBytes: gpu.vramBytes })),
      os: { platform: hw.platform, arch: hw.arch, hostname: `sim-${this.index + 1}` },
    };
  }

  private enqueueTelemetry(now: number): void {
    const hw = this.ctx.behaviour.hardware;
    const seq = ++this.lastSeq;
    const loaded = this.models ? [...this.models.values()].filter((job) => job.status.state === 'ready' && job.loaded) : [];
    const payload = encode('telemetry', {
      v: PROTOCOL_VERSION,
      seq,
      ts: now,
      windowMs: this.ctx.behaviour.telemetryIntervalMs,
      cpu: { percent: Math.round(this.ctx.random() * 300) / 10 },
      memory: { usedBytes: Math.floor(hw.memoryBytes * 0.4), totalBytes: hw.memoryBytes },
      gpus: hw.gpus.map((gpu, index) => ({ index, vramUsedBytes: 0, vramTotalBytes: gpu.vramBytes })),
      disk: { freeBytes: Math.floor(hw.diskBytes * 0.8), modelsBytes: 0 },
      loadedModels: loaded.map((job) => ({ name: job.status.name, contextSize: 2048, parallel: 1, activeRequests: 0 })),
      inference: {
        activeRequests: this.inference?.size ?? 0,
        queuedRequests: 0,
        completedRequests: this.windowCompleted + this.windowFailed,
        failedRequests: this.windowFailed,
        generatedTokens: this.windowTokens,
        tokensPerSecond: this.windowTokens > 0 ? this.ctx.behaviour.tokensPerSecond : 0,
      },
      draining: false,
    });
    this.windowCompleted = 0;
    this.windowFailed = 0;
    this.windowTokens = 0;
    this.held.push({ seq, payload, kind: 'telemetry', firstSentAt: 0, sentAt: 0 });
    this.flush(false);
  }

  /**
   * Sends held entries in seq order with prevSeq (the entry held before, 0 for the oldest held), as the agent's
   * outbox: `all` sends every held entry again (reconnect, resend), otherwise only the ones not sent on this
   * connection yet.
   */
  private flush(all: boolean): void {
    if (this.state !== 'connected' || this.client.muted) return;
    const now = Date.now();
    let prevSeq = 0;
    for (const entry of this.held) {
      if (all || entry.sentAt === 0) {
        if (entry.firstSentAt > 0) this.ctx.counters.entriesResent++;
        else {
          entry.firstSentAt = now;
          this.ctx.counters.entriesSent++;
        }
        entry.sentAt = now;
        // The payload was validated by the codec when enqueued; prevSeq is spliced in as the agent adds it on send.
        this.publishRaw(entry.kind, `${entry.payload.slice(0, -1)},"prevSeq":${prevSeq}}`);
      }
      prevSeq = entry.seq;
    }
    if (this.ctx.behaviour.mode === 'plain') {
      // No control plane acknowledges entries in plain mode: sent is as far as they go.
      this.ctx.counters.entriesAcked += this.held.length;
      this.ackedSeq = this.lastSeq;
      this.held = [];
    }
  }

  private onOutboxAck(payload: Buffer): void {
    const decoded = decode('outboxAck', payload);
    if (!decoded.ok) {
      this.ctx.counters.malformed++;
      return;
    }
    const ack = decoded.value;
    const now = Date.now();
    if (ack.sessionId === this.sessionId && !this.helloAcked) {
      this.helloAcked = true;
      this.ctx.counters.helloAcked++;
      this.ctx.latency.helloAck.record(now - this.helloSentAt);
    }
    if (ack.upToSeq > this.ackedSeq) {
      this.ackedSeq = Math.min(ack.upToSeq, this.lastSeq);
      while (this.held.length > 0 && (this.held[0] as HeldEntry).seq <= this.ackedSeq) {
        const entry = this.held.shift() as HeldEntry;
        this.ctx.counters.entriesAcked++;
        if (entry.firstSentAt > 0) this.ctx.latency.entryAck.record(now - entry.firstSentAt);
      }
    }
    if (ack.resend === true) {
      this.ctx.counters.resendRequests++;
      this.flush(true);
    }
  }

  private onDesired(payload: Buffer): void {
    const decoded = decode('desired', payload);
    if (!decoded.ok) {
      this.ctx.counters.malformed++;
      return;
    }
    const desired: DesiredState = decoded.value;
    const arrived = Date.now();
    if (this.desiredAt === 0) this.desiredAt = arrived;
    for (const model of desired.models) if (!this.modelArrivals.has(model.name)) this.modelArrivals.set(model.name, arrived);
    if (desired.version <= this.desiredVersion) return;
    this.desiredVersion = desired.version;
    const models = (this.models ??= new Map<string, ModelJob>());
    const wanted = new Set(desired.models.map((model) => model.name));
    for (const [name, job] of models) {
      if (!wanted.has(name)) {
        clearTimeout(job.timer);
        models.delete(name);
      }
    }
    const now = Date.now();
    for (const model of desired.models) {
      const current = models.get(model.name);
      if (current && current.status.sha256 === model.sha256 && current.status.state !== 'failed') {
        current.loaded = model.loaded;
        if (current.status.state === 'ready') current.status = { ...current.status, loaded: model.loaded, desiredVersion: desired.version };
        continue;
      }
      if (current) clearTimeout(current.timer);
      const job: ModelJob = { status: { name: model.name, sha256: model.sha256, desiredVersion: desired.version, since: now, state: 'pending' }, sizeBytes: model.sizeBytes, timer: undefined, loaded: model.loaded };
      models.set(model.name, job);
      this.advanceModel(job, model.sizeBytes, 0);
    }
    this.publishModelState();
  }

  /** pending -> downloading (quarters) -> verifying -> loading -> ready | failed, on per-model timers */
  private advanceModel(job: ModelJob, sizeBytes: number, step: number): void {
    const behaviour = this.ctx.behaviour;
    const base = { name: job.status.name, sha256: job.status.sha256, desiredVersion: job.status.desiredVersion };
    const next = (delayMs: number, then: () => void): void => {
      job.timer = setTimeout(() => {
        job.timer = undefined;
        if (this.models?.get(base.name) !== job || this.state === 'crashed' || this.state === 'stopped') return;
        then();
        this.publishModelState();
      }, delayMs);
    };
    const failsNow = (): boolean => this.ctx.random() < behaviour.modelFailureRate;
    if (step <= 4) {
      // Downloading: 0, 1/4, ... 4/4 of the file, each a quarter of downloadMs apart.
      next(step === 0 ? 0 : behaviour.downloadMs / 4, () => {
        if (step === 2 && failsNow()) return this.failModel(job, base);
        job.status = { ...base, since: step === 0 ? Date.now() : job.status.since, state: 'downloading', receivedBytes: Math.floor((sizeBytes * step) / 4), totalBytes: sizeBytes };
        this.advanceModel(job, sizeBytes, step + 1);
      });
      return;
    }
    if (step === 5) {
      next(0, () => {
        job.status = { ...base, since: Date.now(), state: 'verifying' };
        this.advanceModel(job, sizeBytes, 6);
      });
      return;
    }
    if (step === 6) {
      if (!job.loaded) {
        next(0, () => (job.status = { ...base, since: Date.now(), state: 'ready', loaded: false }));
        return;
      }
      next(0, () => {
        job.status = { ...base, since: Date.now(), state: 'loading' };
        this.advanceModel(job, sizeBytes, 7);
      });
      return;
    }
    next(behaviour.loadMs, () => {
      if (failsNow()) return this.failModel(job, base);
      job.status = { ...base, since: Date.now(), state: 'ready', loaded: true };
    });
  }

  private failModel(job: ModelJob, base: { name: string; sha256: string; desiredVersion: number }): void {
    const code = this.ctx.behaviour.modelFailureCode;
    job.status = { ...base, since: Date.now(), state: 'failed', code, message: `simulated failure (${code})` };
  }

  private publishModelState(): void {
    if (this.state !== 'connected' || this.client.muted) return; // retained snapshot: the next connect sends the current one
    this.publish('modelState', { v: PROTOCOL_VERSION, ts: Date.now(), desiredVersion: this.desiredVersion, models: this.modelStates() });
  }

  private onInferenceRequest(payload: Buffer): void {
    const decoded = decode('inferenceRequest', payload);
    if (!decoded.ok) {
      this.ctx.counters.malformed++;
      return;
    }
    const request = decoded.value;
    const key = `${request.requestId}#${request.attempt}`;
    const jobs = (this.inference ??= new Map<string, NodeJS.Timeout>());
    if (jobs.has(key)) return; // a QoS 1 redelivery of a running attempt
    const model = this.models?.get(request.model);
    if (!model || model.status.state !== 'ready' || !model.loaded) return this.respondError(request, 'MODEL_NOT_FOUND', `model ${request.model} is not loaded here`);
    const behaviour = this.ctx.behaviour;
    const receivedAt = Date.now();
    const total = request.maxTokens ?? behaviour.defaultMaxTokens;
    const tokenGapMs = behaviour.tokensPerSecond > 0 ? 1000 / behaviour.tokensPerSecond : 0;
    const fails = this.ctx.random() < behaviour.inferenceErrorRate;
    let produced = 0;
    let seq = 0;
    let text = '';
    const step = (): void => {
      if (this.state !== 'connected') return void jobs.delete(key);
      if (fails) {
        jobs.delete(key);
        return this.respondError(request, 'GENERATION_FAILED', 'simulated generation failure');
      }
      // Up to 8 tokens per chunk, as the agent's coalescer.
      const batch = Math.min(8, total - produced, Math.max(1, Math.round(20 / Math.max(1, tokenGapMs))));
      const piece = ' token'.repeat(batch);
      produced += batch;
      text += piece;
      if (request.stream) {
        this.publish('inferenceResponse', {
          v: PROTOCOL_VERSION,
          type: 'chunk',
          requestId: request.requestId,
          attempt: request.attempt,
          seq: seq++,
          tokens: batch,
          tokenIds: Array.from({ length: batch }, () => 300),
          delta: { content: piece },
        });
      }
      if (produced < total) {
        jobs.set(key, setTimeout(step, tokenGapMs * batch));
        return;
      }
      jobs.delete(key);
      const totalMs = Date.now() - receivedAt;
      this.ctx.counters.inferenceServed++;
      this.windowCompleted++;
      this.windowTokens += produced;
      this.ctx.latency.inference.record(totalMs);
      this.publish('inferenceResponse', {
        v: PROTOCOL_VERSION,
        type: 'result',
        requestId: request.requestId,
        attempt: request.attempt,
        finishReason: 'length',
        message: { role: 'assistant', content: text },
        usage: { promptTokens: request.messages.length * 8, completionTokens: produced },
        timings: { ttftMs: behaviour.ttftMs, totalMs },
        chunkCount: seq,
      });
    };
    jobs.set(key, setTimeout(step, behaviour.ttftMs));
  }

  private onInferenceCancel(payload: Buffer): void {
    const decoded = decode('inferenceCancel', payload);
    if (!decoded.ok) {
      this.ctx.counters.malformed++;
      return;
    }
    const key = `${decoded.value.requestId}#${decoded.value.attempt}`;
    const timer = this.inference?.get(key);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.inference?.delete(key);
    this.ctx.counters.inferenceCancelled++;
    this.respondError({ requestId: decoded.value.requestId, attempt: decoded.value.attempt }, 'CANCELLED', 'cancelled');
  }

  private respondError(request: Pick<InferenceRequest, 'requestId' | 'attempt'>, code: ErrorCode, message: string): void {
    if (code !== 'CANCELLED') {
      this.ctx.counters.inferenceFailed++;
      this.windowFailed++;
    }
    this.publish('inferenceResponse', { v: PROTOCOL_VERSION, type: 'error', requestId: request.requestId, attempt: request.attempt, code, message, retryable: isRetryable(code) });
  }

  private stopInference(): void {
    if (!this.inference) return;
    for (const timer of this.inference.values()) clearTimeout(timer);
    this.inference.clear();
  }

  private stopWork(): void {
    this.stopInference();
    if (this.models) {
      for (const job of this.models.values()) {
        clearTimeout(job.timer);
        job.timer = undefined;
      }
    }
  }
}
