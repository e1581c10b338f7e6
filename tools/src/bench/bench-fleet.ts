import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { trackChild } from './cleanup.js';
import { ProjectFleet } from './project-fleet.js';
import type { Flags } from './suite.js';
import { LightFleet, type LightDeviceIdentity, type LightFleetOptions, type LightFleetStats } from './light-fleet.js';

export type DeviceEvent = { deviceId: string; at: number };

/**
 * What the suites drive: a simulated fleet in this process or spread over worker processes (one per few thousand
 * devices: the open-file limit here is 20,000 per process, and the simulator's CPU stays out of the measured process).
 */
export interface BenchFleet {
  readonly size: number;
  /** processes that run the simulated devices (their CPU is the simulator's, reported beside the figures) */
  readonly pids: number[];
  join(identities: readonly LightDeviceIdentity[]): Promise<void>;
  stats(): Promise<LightFleetStats>;
  crash(k: number): Promise<DeviceEvent[]>;
  silence(k: number): Promise<DeviceEvent[]>;
  quiesce(): Promise<void>;
  modelArrivals(): Promise<[string, string, number][]>;
  stop(): Promise<void>;
}

class InProcessFleet implements BenchFleet {
  readonly pids = [process.pid];
  private readonly fleet: LightFleet;
  constructor(options: LightFleetOptions) {
    this.fleet = new LightFleet(options);
  }
  get size(): number {
    return this.fleet.devices.length;
  }
  join(identities: readonly LightDeviceIdentity[]): Promise<void> {
    return this.fleet.join(identities);
  }
  stats(): Promise<LightFleetStats> {
    return Promise.resolve(this.fleet.stats());
  }
  crash(k: number): Promise<DeviceEvent[]> {
    return Promise.resolve(this.fleet.crash(k));
  }
  silence(k: number): Promise<DeviceEvent[]> {
    return Promise.resolve(this.fleet.silence(k));
  }
  quiesce(): Promise<void> {
    this.fleet.quiesce();
    return Promise.resolve();
  }
  modelArrivals(): Promise<[string, string, number][]> {
    return Promise.resolve(this.fleet.modelArrivals());
  }
  stop(): Promise<void> {
    return this.fleet.stop();
  }
}

/** A request to a worker and its answer (fleet-worker.ts). */
export type WorkerRequest =
  | { id: number; op: 'init'; options: LightFleetOptions }
  | { id: number; op: 'join'; identities: LightDeviceIdentity[] }
  | { id: number; op: 'stats' | 'quiesce' | 'modelArrivals' | 'stop' }
  | { id: number; op: 'crash' | 'silence'; k: number };
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
export type WorkerAnswer = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

// From the TypeScript sources (tests) the built worker runs: node cannot fork a .ts file (`npm test` builds first).
const WORKER = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../../dist/bench/fleet-worker.js' : './fleet-worker.js', import.meta.url));

class Worker {
  private next = 1;
  private readonly pending = new Map<number, { done: (v: unknown) => void; fail: (e: Error) => void }>();
  constructor(readonly child: ChildProcess) {
    child.on('message', (m: WorkerAnswer) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.done(m.value);
      else p.fail(new Error(m.error));
    });
    child.once('exit', (code) => {
      for (const p of this.pending.values()) p.fail(new Error(`fleet worker exited (${code})`));
      this.pending.clear();
    });
  }
  call<T>(request: WithoutId<WorkerRequest>): Promise<T> {
    const id = this.next++;
    return new Promise<T>((done, fail) => {
      this.pending.set(id, { done: (v) => done(v as T), fail });
      this.child.send({ ...request, id });
    });
  }
}

class WorkerFleet implements BenchFleet {
  size = 0;
  private constructor(private readonly workers: Worker[]) {}

  static async start(options: LightFleetOptions, count: number, perWorker: number): Promise<WorkerFleet> {
    const n = Math.max(1, Math.ceil(count / perWorker));
    // execArgv: [] so a test runner's source-resolving conditions do not leak into the built worker
    const workers = Array.from({ length: n }, () => {
      const child = fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
      trackChild(child);
      return new Worker(child);
    });
    await Promise.all(workers.map((w, i) => w.call({ op: 'init', options: { ...options, indexOffset: i * perWorker } })));
    return new WorkerFleet(workers);
  }

  get pids(): number[] {
    return this.workers.map((w) => w.child.pid).filter((p): p is number => p !== undefined);
  }

  async join(identities: readonly LightDeviceIdentity[]): Promise<void> {
    const per = Math.ceil(identities.length / this.workers.length);
    this.size += identities.length;
    await Promise.all(this.workers.map((w, i) => w.call({ op: 'join', identities: identities.slice(i * per, (i + 1) * per) })));
  }

  async stats(): Promise<LightFleetStats> {
    const all = await Promise.all(this.workers.map((w) => w.call<LightFleetStats>({ op: 'stats' })));
    const sum: LightFleetStats = { devices: 0, connected: 0, everConnected: 0, failedConnects: 0, failedByReason: {}, dropped: 0, telemetryOffered: 0, telemetryAcked: 0, resends: 0, pubacks: 0, desiredReceived: 0 };
    for (const s of all) {
      for (const key of ['devices', 'connected', 'everConnected', 'failedConnects', 'dropped', 'telemetryOffered', 'telemetryAcked', 'resends', 'pubacks', 'desiredReceived'] as const) sum[key] += s[key];
      for (const [why, k] of Object.entries(s.failedByReason)) sum.failedByReason[why] = (sum.failedByReason[why] ?? 0) + k;
    }
    return sum;
  }

  private async spread(op: 'crash' | 'silence', k: number): Promise<DeviceEvent[]> {
    const per = Math.ceil(k / this.workers.length);
    const parts = await Promise.all(this.workers.map((w, i) => w.call<DeviceEvent[]>({ op, k: Math.max(0, Math.min(per, k - i * per)) })));
    return parts.flat();
  }
  crash(k: number): Promise<DeviceEvent[]> {
    return this.spread('crash', k);
  }
  silence(k: number): Promise<DeviceEvent[]> {
    return this.spread('silence', k);
  }
  async quiesce(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.call({ op: 'quiesce' })));
  }
  async modelArrivals(): Promise<[string, string, number][]> {
    return (await Promise.all(this.workers.map((w) => w.call<[string, string, number][]>({ op: 'modelArrivals' })))).flat();
  }
  async stop(): Promise<void> {
    await Promise.all(
      this.workers.map(async (w) => {
        await w.call({ op: 'stop' }).catch(() => undefined);
        if (w.child.exitCode === null) w.child.kill('SIGKILL');
      }),
    );
  }
}

/** Which simulator runs the devices: the bench's light fleet (workers, desired-state arrival times) or the project's. */
export interface FleetChoice {
  engine: 'light' | 'project';
  /** devices per worker process (light engine) */
  perWorker: number;
}

/** `--sim light|project` and `--per-worker N` */
export function fleetChoice(flags: Flags): FleetChoice {
  const engine = flags.string('sim', 'light');
  if (engine !== 'light' && engine !== 'project') throw new Error(`--sim ${engine}: expected light or project`);
  return { engine, perWorker: flags.number('per-worker', DEFAULT_DEVICES_PER_WORKER) };
}

/** Devices per worker process; at or below it the fleet runs in this process. */
export const DEFAULT_DEVICES_PER_WORKER = 3000;

/**
 * A simulated fleet of `expected` devices: in this process up to `perWorker` devices, else over worker processes.
 * `perWorker: 0` forces workers for any size (e.g. to keep the simulator's CPU apart from the runner's).
 */
export async function openBenchFleet(options: LightFleetOptions, expected: number, choice: FleetChoice = { engine: 'light', perWorker: DEFAULT_DEVICES_PER_WORKER }): Promise<BenchFleet> {
  if (choice.engine === 'project') return new ProjectFleet(options);
  const perWorker = choice.perWorker;
  if (perWorker > 0 && expected <= perWorker) return new InProcessFleet(options);
  return WorkerFleet.start(options, expected, perWorker > 0 ? perWorker : expected);
}
