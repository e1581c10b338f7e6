import { ErrorCode } from '@flotilla/protocol';
import { AppError } from '../platform/common/app-error.js';

export interface BalancerOptions {
  /** requests one device runs at once before the next one waits (PRODUCT.md §4: 10) */
  deviceConcurrency: number;
  /** requests waiting for a slot across the fleet before 503 */
  queueLimit: number;
  /** longest wait for a slot */
  queueWaitMs: number;
  /** failures in a row that put a device in cooldown */
  cooldownFailures: number;
  cooldownMs: number;
}

export interface PickRequest {
  model: string;
  candidates: readonly string[];
  /** devices tried already for this request */
  exclude?: ReadonlySet<string>;
  /** same key -> same device while it is healthy (conversation affinity) */
  affinityKey?: string;
}

export interface Lease {
  deviceId: string;
  /** frees the slot; `ok` false counts a failure against the device (never for client errors) */
  release(outcome: 'success' | 'device-failure' | 'neutral', stats?: { tokens: number; genMs: number }): void;
}

interface DeviceLoad {
  outstanding: number;
  /** outstanding leases per model (for metrics) */
  byModel: Map<string, number>;
  /** tokens per second, exponentially averaged; starts equal for every device */
  speed: number;
  measured: boolean;
  failures: number;
  cooldownUntil: number;
  served: number;
}

interface Waiter {
  request: PickRequest;
  resolve(lease: Lease): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

const DEFAULT_SPEED = 100;
const AFFINITY_MAX = 10_000;

/**
 * Least outstanding requests weighted by measured speed: a device's score is (outstanding + 1) / speed and the lowest
 * wins, so a device twice as fast takes about twice the share. Session affinity first, a per-device concurrency limit,
 * a bounded FIFO wait queue, cooldown after repeated failures.
 */
export class Balancer {
  private readonly loads = new Map<string, DeviceLoad>();
  private readonly affinity = new Map<string, string>();
  private readonly waiters: Waiter[] = [];
  private readonly options: BalancerOptions;
  /** devices that may be leased at all (e.g. not still reconnecting after a restart); see `gateBy` */
  private routable: (deviceId: string) => boolean = () => true;
  /** fires at the earliest cooldown end that a waiter is held back by */
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeAt = Infinity;

  constructor(options: BalancerOptions) {
    this.options = { ...options };
  }

  get deviceConcurrency(): number {
    return this.options.deviceConcurrency;
  }

  /** Changes the per-device limit (routing settings from the fleet file); a raised limit serves waiters at once. */
  setDeviceConcurrency(limit: number): void {
    if (limit === this.options.deviceConcurrency) return;
    this.options.deviceConcurrency = limit;
    this.drain();
  }

  /**
   * Only devices `routable` accepts are leased; the others stay candidates a waiter may get once they become
   * routable (call `wake` then).
   */
  gateBy(routable: (deviceId: string) => boolean): void {
    this.routable = routable;
  }

  /** Something outside the balancer made a device leasable again (it came back online): serve waiters now. */
  wake(): void {
    this.drain();
  }

  /** Whether some candidate has a free slot now (used to escalate tiers). */
  hasFreeSlot(candidates: readonly string[]): boolean {
    const now = Date.now();
    return candidates.some((d) => this.available(d, now));
  }

  /** Free slots across these devices. */
  freeSlots(candidates: readonly string[]): number {
    const now = Date.now();
    let free = 0;
    for (const d of candidates) {
      const l = this.load(d);
      if (l.cooldownUntil <= now && this.routable(d)) free += Math.max(0, this.options.deviceConcurrency - l.outstanding);
    }
    return free;
  }

  /** A lease on the best device now, or after waiting in the queue; 503 with Retry-After when saturated. */
  acquire(request: PickRequest, signal?: AbortSignal): Promise<Lease> {
    const eligible = request.candidates.filter((d) => !request.exclude?.has(d));
    if (eligible.length === 0) return Promise.reject(noDevice(request.model));
    const lease = this.tryPick({ ...request, candidates: eligible });
    if (lease) return Promise.resolve(lease);
    if (this.waiters.length >= this.options.queueLimit || this.options.queueWaitMs === 0) {
      return Promise.reject(saturated(request.model));
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        request: { ...request, candidates: eligible },
        resolve,
        reject,
        timer: setTimeout(() => {
          this.removeWaiter(waiter);
          reject(saturated(request.model));
        }, this.options.queueWaitMs),
      };
      signal?.addEventListener(
        'abort',
        () => {
          this.removeWaiter(waiter);
          clearTimeout(waiter.timer);
          reject(new AppError(ErrorCode.CANCELLED, 'request cancelled while waiting for a device'));
        },
        { once: true },
      );
      this.waiters.push(waiter);
      this.scheduleWake();
    });
  }

  /** Requests each device served and has outstanding (for stats and tests). */
  snapshot(): Record<string, { outstanding: number; served: number; speed: number; coolingDown: boolean }> {
    const now = Date.now();
    const out: Record<string, { outstanding: number; served: number; speed: number; coolingDown: boolean }> = {};
    for (const [d, l] of this.loads) out[d] = { outstanding: l.outstanding, served: l.served, speed: Math.round(l.speed), coolingDown: l.cooldownUntil > now };
    return out;
  }

  get queued(): number {
    return this.waiters.length;
  }

  /** Requests waiting for a slot, per model. */
  queuedByModel(): Map<string, number> {
    const out = new Map<string, number>();
    for (const w of this.waiters) out.set(w.request.model, (out.get(w.request.model) ?? 0) + 1);
    return out;
  }

  /** Outstanding leases per device and model, and whether each device is cooling down (for metrics). */
  loadByDevice(): { deviceId: string; byModel: ReadonlyMap<string, number>; outstanding: number; coolingDown: boolean }[] {
    const now = Date.now();
    return [...this.loads].map(([deviceId, l]) => ({ deviceId, byModel: l.byModel, outstanding: l.outstanding, coolingDown: l.cooldownUntil > now }));
  }

  /** Forget a device's affinity when it dies, so its conversations move together to one new device. */
  forgetDevice(deviceId: string): void {
    for (const [k, d] of this.affinity) if (d === deviceId) this.affinity.delete(k);
  }

  /**
   * Forget a device for good (revoked): its affinity and its load. A lease it still holds releases into the load it
   * captured, so nothing is recreated here.
   */
  removeDevice(deviceId: string): void {
    this.forgetDevice(deviceId);
    this.loads.delete(deviceId);
  }

  private tryPick(request: PickRequest): Lease | undefined {
    const now = Date.now();
    if (request.affinityKey) {
      const preferred = this.affinity.get(request.affinityKey);
      if (preferred && request.candidates.includes(preferred)) {
        if (this.available(preferred, now)) return this.lease(preferred, request.model, request.affinityKey);
        // Healthy but busy: spill over this once without moving the conversation's home.
        if (this.load(preferred).cooldownUntil <= now && this.routable(preferred)) return this.pickLeast(request.model, request.candidates, now, undefined);
      }
    }
    return this.pickLeast(request.model, request.candidates, now, request.affinityKey);
  }

  private pickLeast(model: string, candidates: readonly string[], now: number, affinityKey: string | undefined): Lease | undefined {
    let best: string | undefined;
    let bestScore = Infinity;
    // A device not measured yet counts as average, so it is neither starved nor flooded.
    let sum = 0;
    let n = 0;
    for (const l of this.loads.values()) {
      if (!l.measured) continue;
      sum += l.speed;
      n++;
    }
    const average = n > 0 ? sum / n : DEFAULT_SPEED;
    for (const d of candidates) {
      if (!this.available(d, now)) continue;
      const l = this.load(d);
      const score = (l.outstanding + 1) / (l.measured ? l.speed : average);
      // ties go to the device that served less, so equal devices share evenly
      if (score < bestScore || (score === bestScore && best !== undefined && l.served < this.load(best).served)) {
        best = d;
        bestScore = score;
      }
    }
    return best === undefined ? undefined : this.lease(best, model, affinityKey);
  }

  private lease(deviceId: string, model: string, affinityKey: string | undefined): Lease {
    const l = this.load(deviceId);
    l.outstanding++;
    l.served++;
    l.byModel.set(model, (l.byModel.get(model) ?? 0) + 1);
    if (affinityKey) {
      this.affinity.delete(affinityKey);
      this.affinity.set(affinityKey, deviceId);
      if (this.affinity.size > AFFINITY_MAX) this.affinity.delete(this.affinity.keys().next().value as string);
    }
    let released = false;
    return {
      deviceId,
      release: (outcome, stats) => {
        if (released) return;
        released = true;
        l.outstanding--;
        const left = (l.byModel.get(model) ?? 1) - 1;
        if (left > 0) l.byModel.set(model, left);
        else l.byModel.delete(model);
        if (outcome === 'success') {
          l.failures = 0;
          if (stats && stats.tokens > 0 && stats.genMs > 0) {
            const measured = (stats.tokens * 1000) / stats.genMs;
            l.speed = l.measured ? l.speed * 0.8 + measured * 0.2 : measured;
            l.measured = true;
          }
        } else if (outcome === 'device-failure') {
          l.failures++;
          if (l.failures >= this.options.cooldownFailures) {
            l.cooldownUntil = Date.now() + this.options.cooldownMs;
            l.failures = 0;
          }
        }
        this.drain();
      },
    };
  }

  /** Hands freed slots to waiters in FIFO order (a waiter whose devices are all busy lets later ones pass). */
  private drain(): void {
    for (let i = 0; i < this.waiters.length; ) {
      const w = this.waiters[i] as Waiter;
      const lease = this.tryPick(w.request);
      if (!lease) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      clearTimeout(w.timer);
      w.resolve(lease);
    }
    this.scheduleWake();
  }

  /**
   * A cooldown ends without any release or status event, so nothing else would serve a request waiting for that
   * device: one timer at the earliest cooldown end among the waiters' candidates drains the queue then.
   */
  private scheduleWake(): void {
    const now = Date.now();
    let earliest = Infinity;
    for (const w of this.waiters) {
      for (const d of w.request.candidates) {
        const until = this.load(d).cooldownUntil;
        if (until > now && until < earliest) earliest = until;
      }
    }
    if (earliest === this.wakeAt) return;
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    this.wakeAt = earliest;
    if (earliest === Infinity) return;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined;
      this.wakeAt = Infinity;
      this.drain();
    }, earliest - now + 1);
    this.wakeTimer.unref();
  }

  private removeWaiter(w: Waiter): void {
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private available(deviceId: string, now: number): boolean {
    const l = this.load(deviceId);
    return l.cooldownUntil <= now && l.outstanding < this.options.deviceConcurrency && this.routable(deviceId);
  }

  private load(deviceId: string): DeviceLoad {
    let l = this.loads.get(deviceId);
    if (!l) {
      l = { outstanding: 0, byModel: new Map(), speed: DEFAULT_SPEED, measured: false, failures: 0, cooldownUntil: 0, served: 0 };
      this.loads.set(deviceId, l);
    }
    return l;
  }
}

export function saturated(model: string): AppError {
  return new AppError(ErrorCode.NO_DEVICE_AVAILABLE, `every device serving ${model} is busy; retry shortly`, { reason: 'saturated' }, { 'retry-after': '1' });
}

export function noDevice(model: string): AppError {
  return new AppError(ErrorCode.NO_DEVICE_AVAILABLE, `no online device serves ${model} now`, { reason: 'no-replica' }, { 'retry-after': '5' });
}
