import type { Hardware, ModelStateName } from '@flotilla/protocol';
import { closeEnrollmentAgents, enrollDevice, loadCredentials, mintEnrollmentTokens, saveCredentials, type SimCredentials } from './enroll.js';
import { saturateGateway, type GatewayLoadOptions, type GatewayLoadResult } from './gateway-load.js';
import { sourceAddress } from './mqtt-client.js';
import { DEFAULT_BEHAVIOUR, DEFAULT_HARDWARE, SIM_AGENT_VERSION, SimDevice, newCounters, type HardwareProfile, type SimBehaviour, type SimContext, type SimCounters } from './sim-device.js';
import { LatencyRecorder, mapLimit, type LatencySummary } from './stats.js';
import { TcpProxy } from './tcp-proxy.js';

export interface SimFleetOptions {
  /** control plane base URL (enrollment); not needed in plain mode */
  controlPlaneUrl?: string;
  /** an admin bearer that may mint enrollment tokens (or pass `enrollmentToken`) */
  adminToken?: string;
  /** an enrollment token with enough uses */
  enrollmentToken?: string;
  /** labels of minted enrollment tokens (default { sim: 'true' }) */
  labels?: Record<string, string>;
  /** broker to dial instead of the enrolled URL (required in plain mode), e.g. mqtt://127.0.0.1:1883 */
  mqttUrl?: string;
  /** credentials of devices enrolled elsewhere: joined first, before the file's and before enrolling */
  credentials?: readonly SimCredentials[];
  /** index of this fleet's first device in a larger fleet (worker processes): names and source addresses */
  indexOffset?: number;
  /** credentials are loaded from here (devices re-join without enrolling) and saved after enrolling */
  credentialsFile?: string;
  /** device names (and, in plain mode, client ids) are `<prefix>-<n>` (default `sim`) */
  namePrefix?: string;
  /** spread source addresses over 127.0.0.0/8 (default true) */
  spreadAddresses?: boolean;
  /** devices per source address (default 20) */
  devicesPerAddress?: number;
  /** second octet of the first source address (default 1: 127.1.0.1) */
  addressBase?: number;
  /** concurrent enrollments (default 16) */
  enrollConcurrency?: number;
  /** route MQTT through a blackholing proxy (needed for cut) */
  proxy?: boolean;
  /** the shared timer's period (default 100 ms): keepalive, telemetry, resends, reconnects */
  tickMs?: number;
  /** connects started per second by join (default: all at once) */
  connectRatePerSecond?: number;
  behaviour?: Partial<Omit<SimBehaviour, 'hardware'>> & { hardware?: Partial<HardwareProfile> };
  random?: () => number;
}

export interface SimFleetStats {
  devices: number;
  /** MQTT connection up (CONNACK received) */
  connected: number;
  /** devices that had an accepted CONNACK at least once */
  everConnected: number;
  /** connected and the control plane answered this connection's hello (plain mode: connected) */
  online: number;
  connecting: number;
  waiting: number;
  crashed: number;
  silenced: number;
  cut: number;
  stopped: number;
  counters: SimCounters;
  /** entries held by devices (sent or not, not acknowledged) */
  entriesHeld: number;
  modelStates: Partial<Record<ModelStateName, number>>;
  latency: { connect: LatencySummary; helloAck: LatencySummary; entryAck: LatencySummary; inference: LatencySummary; enroll: LatencySummary };
  enrolled: number;
  enrollFailures: number;
  heapUsedBytes: number;
  rssBytes: number;
}

/** When a device first received a desired state, and each model in one (ms epoch). */
export interface SimArrival {
  deviceId: string;
  desiredAt: number;
  models: Record<string, number>;
}

/**
 * A simulated fleet in this process: light MQTT clients speaking the agent's protocol (see SimDevice), one shared
 * timer for all of them, enrollment over REST, and scenario verbs (join, crash, silence, cut, heal, revive,
 * saturateGateway, stats, stop). The control plane itself is the caller's (see ControlPlaneProcess).
 */
export class SimFleet {
  readonly devices: SimDevice[] = [];
  private readonly cutIds = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private proxyRef: TcpProxy | undefined;
  private readonly enrollLatency = new LatencyRecorder();
  private enrolledCount = 0;
  private enrollFailureCount = 0;
  private tokens: string[] = [];
  private tokenUsesLeft = 0;
  private readonly saved: SimCredentials[] = [];
  private stopped = false;

  private constructor(
    private readonly options: SimFleetOptions,
    readonly ctx: SimContext,
    private readonly loaded: SimCredentials[],
  ) {}

  /** the blackholing proxy in front of the broker (options.proxy) */
  get proxy(): TcpProxy | undefined {
    return this.proxyRef;
  }

  static async start(options: SimFleetOptions): Promise<SimFleet> {
    const hardware: HardwareProfile = { ...DEFAULT_HARDWARE, ...options.behaviour?.hardware };
    const behaviour: SimBehaviour = { ...DEFAULT_BEHAVIOUR, ...options.behaviour, hardware };
    if (behaviour.mode === 'plain' && !options.mqttUrl) throw new Error('plain mode needs mqttUrl');
    if (behaviour.mode === 'control-plane' && !options.controlPlaneUrl) throw new Error('controlPlaneUrl is required (or use plain mode)');
    const file = options.credentialsFile ? await loadCredentials(options.credentialsFile) : undefined;
    const loaded = [...(options.credentials ?? []), ...(file?.devices ?? [])];
    let brokerUrl = options.mqttUrl ?? loaded[0]?.urls.find((url) => url.startsWith('mqtt://'));
    const ctx: SimContext = {
      behaviour,
      counters: newCounters(),
      latency: { connect: new LatencyRecorder(), helloAck: new LatencyRecorder(), entryAck: new LatencyRecorder(), inference: new LatencyRecorder() },
      broker: { host: '', port: 0 },
      random: options.random ?? Math.random,
    };
    const fleet = new SimFleet(options, ctx, [...loaded]);
    fleet.saved.push(...loaded);
    if (!brokerUrl) {
      // Learn the broker URL from the first enrollment.
      const first = await fleet.enrollBatch(1);
      brokerUrl = first[0]?.urls.find((url) => url.startsWith('mqtt://'));
      fleet.loaded.push(...first);
      if (!brokerUrl) throw new Error('the control plane offered no mqtt:// URL: pass mqttUrl');
    }
    const target = new URL(brokerUrl);
    ctx.broker = { host: target.hostname, port: Number(target.port || 1883) };
    if (options.proxy) {
      fleet.proxyRef = await TcpProxy.start({ target: ctx.broker });
      ctx.broker = { host: fleet.proxyRef.host, port: fleet.proxyRef.port };
    }
    fleet.timer = setInterval(() => fleet.tick(), options.tickMs ?? 100);
    return fleet;
  }

  get behaviour(): SimBehaviour {
    return this.ctx.behaviour;
  }

  /** Adds n devices (credentials loaded from the file first, then enrolled) and starts them; resolves once started. */
  async join(n: number): Promise<SimDevice[]> {
    const plain = this.ctx.behaviour.mode === 'plain';
    const prefix = this.options.namePrefix ?? 'sim';
    const credentials: (SimCredentials | { name: string; deviceId: string })[] = [];
    while (credentials.length < n && this.loaded.length > 0) credentials.push(this.loaded.shift() as SimCredentials);
    const missing = n - credentials.length;
    if (missing > 0) {
      if (plain) {
        for (let i = 0; i < missing; i++) {
          const name = `${prefix}-${(this.options.indexOffset ?? 0) + this.devices.length + credentials.length + 1}`;
          credentials.push({ name, deviceId: name });
        }
      } else {
        credentials.push(...(await this.enrollBatch(missing)));
      }
    }
    const start = this.devices.length + (this.options.indexOffset ?? 0);
    const added = credentials.map((c, i) => {
      const index = start + i;
      const address = this.options.spreadAddresses === false ? undefined : sourceAddress(index, this.options.devicesPerAddress ?? 20, this.options.addressBase ?? 1);
      const secret = 'username' in c ? { username: c.username, password: c.password } : {};
      return new SimDevice(index, c.deviceId, secret, address, this.ctx);
    });
    this.devices.push(...added);
    const rate = this.options.connectRatePerSecond;
    if (!rate) {
      const now = Date.now();
      for (const device of added) device.start(now);
    } else {
      for (let i = 0; i < added.length; i += Math.max(1, Math.round(rate / 10))) {
        const now = Date.now();
        for (const device of added.slice(i, i + Math.max(1, Math.round(rate / 10)))) device.start(now);
        await new Promise((done) => setTimeout(done, 100));
      }
    }
    return added;
  }

  /** crashes k connected devices (socket destroyed, no DISCONNECT: the will fires); returns them */
  crash(k: number): SimDevice[] {
    const picked = this.pick(k, (d) => d.state === 'connected');
    for (const device of picked) device.crash();
    return picked;
  }

  /** silences k connected devices (nothing sent, no PINGREQ, socket kept open) */
  silence(k: number): SimDevice[] {
    const picked = this.pick(k, (d) => d.state === 'connected');
    for (const device of picked) device.silence();
    return picked;
  }

  /** cuts k connected devices off through the proxy (blackhole; they stay cut across reconnects until heal) */
  cut(k: number): SimDevice[] {
    const proxy = this.proxy;
    if (!proxy) throw new Error('cut needs a fleet started with proxy: true');
    const picked = this.pick(k, (d) => d.state === 'connected' && !this.cutIds.has(d.deviceId));
    for (const device of picked) {
      this.cutIds.add(device.deviceId);
      proxy.cutClient(device.deviceId);
    }
    return picked;
  }

  /** lifts every cut (connections that lost bytes are reset and reconnect) */
  heal(): void {
    this.proxy?.heal();
    this.cutIds.clear();
  }

  /** restarts crashed and silenced devices */
  revive(): SimDevice[] {
    const revived = this.devices.filter((d) => d.state === 'crashed' || d.state === 'silenced');
    const now = Date.now();
    for (const device of revived) device.start(now);
    return revived;
  }

  /** stops creating telemetry entries (held ones are still delivered): drain before reading the counters */
  pauseTelemetry(): void {
    this.ctx.telemetryPaused = true;
  }

  resumeTelemetry(): void {
    this.ctx.telemetryPaused = false;
  }

  /** per device: when its first desired state and each model (in a desired state) first arrived */
  arrivals(): SimArrival[] {
    const out: SimArrival[] = [];
    for (const device of this.devices) {
      if (device.desiredAt === 0) continue;
      out.push({ deviceId: device.deviceId, desiredAt: device.desiredAt, models: Object.fromEntries(device.modelArrivals) });
    }
    return out;
  }

  /** HTTP load on the gateway (see saturateGateway) */
  saturateGateway(options: GatewayLoadOptions): Promise<GatewayLoadResult> {
    return saturateGateway(options);
  }

  /** polls stats() until `check` holds; throws with the last stats after timeoutMs */
  async waitFor(check: (stats: SimFleetStats) => boolean, what: string, timeoutMs = 60_000): Promise<SimFleetStats> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const stats = this.stats();
      if (check(stats)) return stats;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${summaryLine(stats)}`);
      await new Promise((done) => setTimeout(done, 100));
    }
  }

  stats(): SimFleetStats {
    const count = { connected: 0, everConnected: 0, online: 0, connecting: 0, waiting: 0, crashed: 0, silenced: 0, cut: 0, stopped: 0 };
    const plain = this.ctx.behaviour.mode === 'plain';
    let entriesHeld = 0;
    const modelStates: Partial<Record<ModelStateName, number>> = {};
    for (const device of this.devices) {
      entriesHeld += device.heldEntries;
      if (device.hasConnected) count.everConnected++;
      if (this.cutIds.has(device.deviceId)) count.cut++;
      switch (device.state) {
        case 'connected':
          count.connected++;
          if (plain || device.helloAcked) count.online++;
          break;
        case 'connecting':
        case 'waiting':
        case 'crashed':
        case 'silenced':
        case 'stopped':
          count[device.state]++;
          break;
        default:
          break;
      }
      for (const model of device.modelStates()) modelStates[model.state] = (modelStates[model.state] ?? 0) + 1;
    }
    const memory = process.memoryUsage();
    return {
      devices: this.devices.length,
      ...count,
      counters: { ...this.ctx.counters },
      entriesHeld,
      modelStates,
      latency: {
        connect: this.ctx.latency.connect.summary(),
        helloAck: this.ctx.latency.helloAck.summary(),
        entryAck: this.ctx.latency.entryAck.summary(),
        inference: this.ctx.latency.inference.summary(),
        enroll: this.enrollLatency.summary(),
      },
      enrolled: this.enrolledCount,
      enrollFailures: this.enrollFailureCount,
      heapUsedBytes: memory.heapUsed,
      rssBytes: memory.rss,
    };
  }

  /** Stops every device (`graceful`: status offline + DISCONNECT as the agent on SIGTERM; else sockets destroyed). */
  async stop(options: { graceful?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    if (options.graceful ?? true) await mapLimit(this.devices, 500, (device) => device.stop());
    else for (const device of this.devices) device.crash();
    await this.proxy?.close();
    closeEnrollmentAgents();
  }

  private tick(): void {
    const now = Date.now();
    for (const device of this.devices) device.tick(now);
  }

  private pick(k: number, eligible: (device: SimDevice) => boolean): SimDevice[] {
    const picked: SimDevice[] = [];
    for (const device of this.devices) {
      if (picked.length >= k) break;
      if (eligible(device)) picked.push(device);
    }
    return picked;
  }

  private async enrollBatch(n: number): Promise<SimCredentials[]> {
    const cpUrl = this.options.controlPlaneUrl;
    if (!cpUrl) throw new Error('enrollment needs controlPlaneUrl');
    if (this.options.enrollmentToken) {
      this.tokens = [this.options.enrollmentToken];
      this.tokenUsesLeft = Number.MAX_SAFE_INTEGER;
    } else if (this.tokenUsesLeft < n) {
      if (!this.options.adminToken) throw new Error('enrollment needs adminToken or enrollmentToken');
      this.tokens = await mintEnrollmentTokens(cpUrl, this.options.adminToken, n, this.options.labels ?? { sim: 'true' });
      this.tokenUsesLeft = n;
    }
    const prefix = this.options.namePrefix ?? 'sim';
    const first = this.saved.length;
    const hardware = this.enrollHardware();
    const results = await mapLimit(Array.from({ length: n }, (_, i) => i), this.options.enrollConcurrency ?? 16, async (i) => {
      const index = first + i;
      const token = this.tokens[Math.floor(i / 10_000)] ?? this.tokens[0] ?? '';
      const address = this.options.spreadAddresses === false ? undefined : sourceAddress(index, this.options.devicesPerAddress ?? 20, this.options.addressBase ?? 1);
      const started = performance.now();
      // Retried a few times: a rate limit or a transient 5xx should not leave a hole in the fleet.
      for (let attempt = 1; ; attempt++) {
        try {
          const credentials = await enrollDevice(cpUrl, { token, name: `${prefix}-${index + 1}`, agentVersion: SIM_AGENT_VERSION, hardware }, address);
          this.enrollLatency.record(performance.now() - started);
          return credentials;
        } catch (error) {
          this.enrollFailureCount++;
          if (attempt >= 5) throw error;
          await new Promise((done) => setTimeout(done, 200 * attempt));
        }
      }
    });
    this.tokenUsesLeft -= n;
    this.enrolledCount += n;
    this.saved.push(...results);
    if (this.options.credentialsFile) await saveCredentials(this.options.credentialsFile, { version: 1, controlPlaneUrl: cpUrl, devices: this.saved });
    return results;
  }

  private enrollHardware(): Hardware {
    const hw = this.ctx.behaviour.hardware;
    return {
      cpu: { model: hw.cpuModel, cores: hw.cores },
      memory: { totalBytes: hw.memoryBytes, freeBytes: Math.floor(hw.memoryBytes * 0.6) },
      disk: { freeBytes: Math.floor(hw.diskBytes * 0.8), totalBytes: hw.diskBytes },
      gpus: hw.gpus.map((gpu) => ({ name: gpu.name, ...(gpu.vendor ? { vendor: gpu.vendor } : {}), vramBytes: gpu.vramBytes })),
      os: { platform: hw.platform, arch: hw.arch },
    };
  }
}

/** Starts a simulated fleet (no devices yet: call join). */
export function startSimFleet(options: SimFleetOptions): Promise<SimFleet> {
  return SimFleet.start(options);
}

/** One line for people: connected / online / failed connects / acked / resends / inference. */
export function summaryLine(stats: SimFleetStats): string {
  const c = stats.counters;
  return [
    `devices ${stats.devices}`,
    `connected ${stats.connected}`,
    `online ${stats.online}`,
    `failed connects ${c.failedConnects}`,
    `reconnects ${c.reconnects}`,
    `entries ${c.entriesAcked}/${c.entriesSent} acked`,
    `resent ${c.entriesResent}`,
    `inference ${c.inferenceServed} ok ${c.inferenceFailed} failed`,
    ...(stats.crashed + stats.silenced + stats.cut > 0 ? [`crashed ${stats.crashed} silenced ${stats.silenced} cut ${stats.cut}`] : []),
    `heap ${Math.round(stats.heapUsedBytes / 1024 / 1024)} MiB`,
  ].join(' | ');
}
