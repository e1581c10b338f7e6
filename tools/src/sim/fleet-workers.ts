import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startSimFleet, type SimArrival, type SimFleet, type SimFleetOptions, type SimFleetStats } from './sim-fleet.js';
import type { LatencySummary } from './stats.js';

/** A device a scenario verb acted on, and when. */
export interface SimDeviceEvent {
  deviceId: string;
  at: number;
}

/**
 * What a scenario drives, whether the devices run in this process (LocalSimFleet) or over worker processes
 * (SimFleetWorkers): the async verbs of SimFleet, stats summed over the processes.
 */
export interface SimFleetControl {
  /** devices joined so far */
  readonly size: number;
  /** processes that run the devices (their CPU is the simulator's) */
  readonly pids: readonly number[];
  join(n: number): Promise<void>;
  stats(): Promise<SimFleetStats>;
  crash(k: number): Promise<SimDeviceEvent[]>;
  silence(k: number): Promise<SimDeviceEvent[]>;
  revive(): Promise<number>;
  pauseTelemetry(): Promise<void>;
  resumeTelemetry(): Promise<void>;
  arrivals(): Promise<SimArrival[]>;
  stop(options?: { graceful?: boolean }): Promise<void>;
}

/** Options of a fleet a worker can run: everything but the random source (it does not cross IPC). */
export type SimWorkerFleetOptions = Omit<SimFleetOptions, 'random'>;

/** The in-process SimFleet behind the SimFleetControl interface. */
export class LocalSimFleet implements SimFleetControl {
  readonly pids = [process.pid];
  constructor(readonly fleet: SimFleet) {}
  get size(): number {
    return this.fleet.devices.length;
  }
  async join(n: number): Promise<void> {
    await this.fleet.join(n);
  }
  stats(): Promise<SimFleetStats> {
    return Promise.resolve(this.fleet.stats());
  }
  crash(k: number): Promise<SimDeviceEvent[]> {
    const at = Date.now();
    return Promise.resolve(this.fleet.crash(k).map((d) => ({ deviceId: d.deviceId, at })));
  }
  silence(k: number): Promise<SimDeviceEvent[]> {
    const at = Date.now();
    return Promise.resolve(this.fleet.silence(k).map((d) => ({ deviceId: d.deviceId, at })));
  }
  revive(): Promise<number> {
    return Promise.resolve(this.fleet.revive().length);
  }
  pauseTelemetry(): Promise<void> {
    this.fleet.pauseTelemetry();
    return Promise.resolve();
  }
  resumeTelemetry(): Promise<void> {
    this.fleet.resumeTelemetry();
    return Promise.resolve();
  }
  arrivals(): Promise<SimArrival[]> {
    return Promise.resolve(this.fleet.arrivals());
  }
  stop(options?: { graceful?: boolean }): Promise<void> {
    return this.fleet.stop(options);
  }
}

/** A request to a worker (fleet-worker-main.ts) and its answer. */
export type SimWorkerRequest =
  | { id: number; op: 'init'; options: SimWorkerFleetOptions }
  | { id: number; op: 'join' | 'crash' | 'silence'; n: number }
  | { id: number; op: 'stats' | 'revive' | 'pauseTelemetry' | 'resumeTelemetry' | 'arrivals' }
  | { id: number; op: 'stop'; graceful: boolean };
export type SimWorkerAnswer = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

// From the TypeScript sources (tests) the built worker runs: node cannot fork a .ts file (build @flotilla/tools first).
const WORKER_MAIN = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../dist/sim/fleet-worker-main.js' : './fleet-worker-main.js', import.meta.url));

class WorkerChannel {
  private next = 1;
  private readonly pending = new Map<number, { done: (v: unknown) => void; fail: (e: Error) => void }>();
  constructor(readonly child: ChildProcess) {
    child.on('message', (m: SimWorkerAnswer) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.done(m.value);
      else p.fail(new Error(m.error));
    });
    child.once('exit', (code) => {
      for (const p of this.pending.values()) p.fail(new Error(`sim fleet worker exited (${code})`));
      this.pending.clear();
    });
  }
  call<T>(request: WithoutId<SimWorkerRequest>): Promise<T> {
    const id = this.next++;
    return new Promise<T>((done, fail) => {
      this.pending.set(id, { done: (v) => done(v as T), fail });
      this.child.send({ ...request, id });
    });
  }
}

export interface SimFleetWorkersOptions extends SimWorkerFleetOptions {
  /** worker processes to fork */
  workers: number;
  /** devices per worker: worker i's devices are numbered from i * perWorker (names, source addresses) */
  perWorker: number;
  /** told of each forked worker (e.g. to kill it on an interrupt) */
  onWorker?: (child: ChildProcess) => void;
}

/**
 * A simulated fleet spread over worker processes, each running startSimFleet over its slice: a process holds at
 * most its open-file limit of connections, and the simulator's CPU stays out of the caller's process. `join(n)`
 * and the scenario verbs split their count over the workers; stats are summed (latency quantiles: the worst
 * worker's, counts summed).
 */
export class SimFleetWorkers implements SimFleetControl {
  size = 0;
  private constructor(private readonly workers: WorkerChannel[]) {}

  static async start(options: SimFleetWorkersOptions): Promise<SimFleetWorkers> {
    const { workers: count, perWorker, onWorker, credentials, ...rest } = options;
    const n = Math.max(1, count);
    // execArgv: [] so a test runner's source-resolving conditions do not leak into the built worker
    const workers = Array.from({ length: n }, () => {
      const child = fork(WORKER_MAIN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
      onWorker?.(child);
      return new WorkerChannel(child);
    });
    const fleet = new SimFleetWorkers(workers);
    // credentials are dealt out as join(n) deals out devices (an even share per worker), so that no worker has to
    // enroll devices of its own because its slice was short
    const dealt = credentials ? Math.ceil(credentials.length / n) : 0;
    try {
      await Promise.all(
        workers.map((w, i) => {
          const slice = credentials ? { credentials: credentials.slice(i * dealt, (i + 1) * dealt) } : {};
          return w.call({ op: 'init', options: { ...rest, ...slice, indexOffset: (rest.indexOffset ?? 0) + i * perWorker } });
        }),
      );
    } catch (error) {
      await fleet.stop({ graceful: false });
      throw error;
    }
    return fleet;
  }

  get pids(): number[] {
    return this.workers.map((w) => w.child.pid).filter((p): p is number => p !== undefined);
  }

  async join(n: number): Promise<void> {
    this.size += n;
    const per = Math.ceil(n / this.workers.length);
    await Promise.all(this.workers.map((w, i) => w.call({ op: 'join', n: share(n, per, i) })));
  }

  async stats(): Promise<SimFleetStats> {
    return sumStats(await Promise.all(this.workers.map((w) => w.call<SimFleetStats>({ op: 'stats' }))));
  }

  private async spread(op: 'crash' | 'silence', k: number): Promise<SimDeviceEvent[]> {
    const per = Math.ceil(k / this.workers.length);
    return (await Promise.all(this.workers.map((w, i) => w.call<SimDeviceEvent[]>({ op, n: share(k, per, i) })))).flat();
  }

  crash(k: number): Promise<SimDeviceEvent[]> {
    return this.spread('crash', k);
  }

  silence(k: number): Promise<SimDeviceEvent[]> {
    return this.spread('silence', k);
  }

  async revive(): Promise<number> {
    return (await Promise.all(this.workers.map((w) => w.call<number>({ op: 'revive' })))).reduce((a, b) => a + b, 0);
  }

  async pauseTelemetry(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.call({ op: 'pauseTelemetry' })));
  }

  async resumeTelemetry(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.call({ op: 'resumeTelemetry' })));
  }

  async arrivals(): Promise<SimArrival[]> {
    return (await Promise.all(this.workers.map((w) => w.call<SimArrival[]>({ op: 'arrivals' })))).flat();
  }

  async stop(options: { graceful?: boolean } = {}): Promise<void> {
    await Promise.all(
      this.workers.map(async (w) => {
        if (w.child.exitCode === null && w.child.signalCode === null) await w.call({ op: 'stop', graceful: options.graceful ?? true }).catch(() => undefined);
        if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
      }),
    );
  }
}

function share(total: number, per: number, i: number): number {
  return Math.max(0, Math.min(per, total - i * per));
}

/** Starts `workers` worker processes, each running startSimFleet (no devices yet: call join). */
export function startSimFleetWorkers(options: SimFleetWorkersOptions): Promise<SimFleetWorkers> {
  return SimFleetWorkers.start(options);
}

/** Devices per worker process by default: a process here may hold 20,000 open files (2 per device with a proxy). */
export const DEFAULT_DEVICES_PER_WORKER = 3000;

/**
 * A fleet for `devices` devices: in this process when they fit in one worker (`perWorker`, default 3,000), else over
 * ceil(devices / perWorker) worker processes. `perWorker: 0` forces one worker process whatever the size (keeps the
 * simulator's CPU out of the caller's process).
 */
export async function openSimFleet(options: SimWorkerFleetOptions & { devices: number; perWorker?: number; onWorker?: (child: ChildProcess) => void }): Promise<SimFleetControl> {
  const { devices, perWorker = DEFAULT_DEVICES_PER_WORKER, onWorker, ...rest } = options;
  if (perWorker > 0 && devices <= perWorker) return new LocalSimFleet(await startSimFleet(rest));
  const per = perWorker > 0 ? perWorker : Math.max(1, devices);
  return startSimFleetWorkers({ ...rest, workers: Math.ceil(devices / per), perWorker: per, ...(onWorker ? { onWorker } : {}) });
}

function sumLatency(all: readonly LatencySummary[]): LatencySummary {
  const out: LatencySummary = { count: 0, p50: 0, p95: 0, p99: 0, max: 0 };
  for (const s of all) {
    out.count += s.count;
    if (s.count === 0) continue;
    out.p50 = Math.max(out.p50, s.p50);
    out.p95 = Math.max(out.p95, s.p95);
    out.p99 = Math.max(out.p99, s.p99);
    out.max = Math.max(out.max, s.max);
  }
  return out;
}

/** Stats of several fleets as one: counts and counters summed, latency quantiles the worst fleet's. */
export function sumStats(all: readonly SimFleetStats[]): SimFleetStats {
  const first = all[0];
  if (!first) throw new Error('no stats to sum');
  const numeric = ['devices', 'connected', 'everConnected', 'online', 'connecting', 'waiting', 'crashed', 'silenced', 'cut', 'stopped', 'entriesHeld', 'enrolled', 'enrollFailures', 'heapUsedBytes', 'rssBytes'] as const;
  const out: SimFleetStats = structuredClone(first);
  for (const s of all.slice(1)) {
    for (const key of numeric) out[key] += s[key];
    for (const [key, value] of Object.entries(s.counters) as [keyof SimFleetStats['counters'], number][]) out.counters[key] += value;
    for (const [state, value] of Object.entries(s.modelStates) as [keyof SimFleetStats['modelStates'], number][]) out.modelStates[state] = (out.modelStates[state] ?? 0) + value;
  }
  for (const key of Object.keys(out.latency) as (keyof SimFleetStats['latency'])[]) out.latency[key] = sumLatency(all.map((s) => s.latency[key]));
  return out;
}
