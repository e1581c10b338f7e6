import type { ErrorCode } from '@flotilla/protocol';
import type { Logger } from '../logger.js';
import { InferenceFailure } from '../runtime/engine.js';
import type { Runtime } from '../runtime/runtime.js';
import { ModelStoreError, type ModelStore } from '../store/model-store.js';
import { isNewerDesired, nextFailure, runStep, stageOf, type RetryPolicy, type StepHandlers } from './executor.js';
import { planSteps } from './planner.js';
import { modelKey, type ActualState, type DesiredModel, type DesiredState, type ModelFailure, type ModelStatus, type Step } from './types.js';

export type ReconcilerOptions = {
  store: ModelStore;
  runtime: Runtime;
  logger: Logger;
  policy: RetryPolicy;
  /** Local hard limits; a desired state may only lower them. */
  diskQuotaBytes: number;
  memoryBudgetBytes: number;
  /** Sends a full snapshot of model statuses (retained on the broker). */
  report: (version: number, statuses: readonly ModelStatus[]) => void;
  /** A download's byte progress, throttled by the store. */
  progress?: (version: number, status: ModelStatus) => void;
  /** Something worth an event: eviction, failure. */
  event?: (level: 'info' | 'warn' | 'error', code: string, message: string, model?: string) => void;
  now?: () => number;
  random?: () => number;
};

/**
 * Converges the device on the desired state, balena-supervisor style: plan from (desired, actual), run the
 * first step, plan again; sleep until woken (new desired state, runtime change) or a retry is due.
 */
export class Reconciler {
  private desired: DesiredState | undefined;
  private appliedVersion = 0;
  private failures: Record<string, ModelFailure> = {};
  private reported: Record<string, ModelStatus> = {};
  private wakeUp: (() => void) | undefined;
  private endBackoff: (() => void) | undefined;
  private current: { step: Step; controller: AbortController } | undefined;
  private limits: { diskQuotaBytes?: number; memoryBudgetBytes?: number } = {};
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly handlers: StepHandlers;

  constructor(private readonly options: ReconcilerOptions) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
    this.handlers = {
      download: async (step, signal) => {
        await this.options.store.download(step.model, {
          signal,
          onProgress: (progress) =>
            this.options.progress?.(this.appliedVersion, {
              name: step.model.name,
              sha256: step.model.sha256,
              phase: 'downloading',
              receivedBytes: progress.bytes,
              ...(progress.totalBytes === undefined ? {} : { totalBytes: progress.totalBytes }),
            }),
        });
      },
      verify: async (step) => {
        await this.options.store.verify(step.model);
      },
      load: async (step) => {
        const path = this.options.store.pathOf(step.model.sha256);
        if (!path) throw new InferenceFailure('MODEL_LOAD_FAILED', `no verified file for ${step.model.name}`);
        this.register(step.model, path);
        try {
          await this.options.runtime.load(step.model.name);
        } catch (error) {
          await this.options.runtime.unload(step.model.name, { forget: true });
          // A file damaged on disk since it was verified loads badly: hash it again, drop it when it changed.
          if (!(await this.options.store.recheck(step.model.sha256))) {
            this.options.event?.('warn', 'MODEL_FILE_CORRUPT', `${step.model.name}: the file on disk no longer matches its sha256, fetching it again`, step.model.name);
          }
          throw error;
        }
        await this.options.store.touch(step.model.sha256);
      },
      unload: async (step) => {
        try {
          // By file: the name may already be registered again with the file that replaces this one.
          await this.options.runtime.unload(step.name, { forget: step.reason !== 'unload-failed', sha256: step.sha256 });
        } catch (error) {
          // The runtime keeps the model counted and marked: the next plan unloads it again, at the loop's backoff.
          this.options.event?.('warn', 'MODEL_UNLOAD_FAILED', `${step.name}: unloading failed: ${errorMessage(error)}`, step.name);
          throw error;
        }
      },
      pin: async (step) => {
        try {
          await this.options.store.setPinned(step.sha256, step.pinned);
        } catch (error) {
          this.options.event?.('warn', 'MODEL_PIN_FAILED', `${step.name}: could not ${step.pinned ? 'pin' : 'unpin'} the file: ${errorMessage(error)}`, step.name);
          throw error;
        }
      },
      evict: async (step) => {
        try {
          await this.options.store.evict(step.sha256);
        } catch (error) {
          // The store keeps the file listed (still counted) and marked: the next plan evicts it again, at the loop's backoff.
          this.options.event?.('warn', 'MODEL_EVICT_FAILED', `could not evict ${step.sha256} (${step.bytes} bytes): ${errorMessage(error)}`);
          throw error;
        }
        this.options.event?.('info', 'MODEL_EVICTED', `evicted ${step.sha256} (${step.bytes} bytes): ${step.reason}`);
      },
      report: (step) => {
        this.options.report(step.version, step.statuses);
        this.reported = Object.fromEntries(step.statuses.map((status) => [status.name, status]));
        this.appliedVersion = Math.max(this.appliedVersion, step.version);
        return Promise.resolve();
      },
      fail: (step) => {
        this.failures[modelKey(step.model)] = { stage: step.stage, code: step.code, reason: step.reason, attempts: 1, retryAt: 0, permanent: true };
        this.options.event?.('error', step.code, `${step.model.name}: ${step.reason}`, step.model.name);
        return Promise.resolve();
      },
    };
  }

  /** Offers a desired state; returns false (and changes nothing) unless it is newer than the current one. */
  offer(state: DesiredState, limits: { diskQuotaBytes?: number; memoryBudgetBytes?: number } = {}): boolean {
    if (this.desired && !isNewerDesired(this.desired.version, state.version)) return false;
    this.desired = state;
    this.limits = limits;
    // A new version is a new chance for models that failed before.
    this.failures = {};
    // Stop a download the new state no longer wants.
    const running = this.current;
    const step = running?.step;
    if (running && step?.kind === 'download' && !state.models.some((model) => model.sha256 === step.model.sha256)) {
      running.controller.abort(new Error('no longer desired'));
    }
    // Pins are planned steps (see planSteps): a failed write is retried by the loop, never left floating.
    for (const model of state.models) {
      const path = this.options.store.pathOf(model.sha256);
      if (path && model.load === false) this.register(model, path);
    }
    this.wake();
    this.endBackoff?.();
    return true;
  }

  desiredVersion(): number {
    return this.desired?.version ?? 0;
  }

  wake(): void {
    this.wakeUp?.();
  }

  actual(): ActualState {
    return {
      appliedVersion: this.appliedVersion,
      files: this.options.store.list(),
      loaded: this.options.runtime.loadedModels(),
      standby: this.options.runtime.standby(),
      failures: this.failures,
      reported: this.reported,
      diskQuotaBytes: Math.min(this.options.diskQuotaBytes, this.limits.diskQuotaBytes ?? Infinity),
      memoryBudgetBytes: Math.min(this.options.memoryBudgetBytes, this.limits.memoryBudgetBytes ?? Infinity),
    };
  }

  /** The statuses most recently reported. */
  statuses(): ModelStatus[] {
    return Object.values(this.reported);
  }

  /**
   * Runs until the signal aborts. After a failed step the loop waits, exponentially longer (policy base to cap,
   * jittered) while steps keep failing, so a step that fails every time (an unload, an eviction, a pin on a full disk)
   * is retried at a bounded rate instead of in a busy loop; a success resets the delay, a newer desired state cuts
   * the wait short.
   */
  async run(signal: AbortSignal): Promise<void> {
    signal.addEventListener('abort', () => {
      this.current?.controller.abort();
      this.wake();
      this.endBackoff?.();
    });
    let failuresInARow = 0;
    while (!signal.aborted) {
      const desired = this.desired;
      if (!desired) {
        await this.sleep(undefined);
        continue;
      }
      const steps = planSteps(desired, this.actual(), this.now());
      const step = steps[0];
      if (!step) {
        await this.sleep(this.nextRetryIn());
        continue;
      }
      const controller = new AbortController();
      this.current = { step, controller };
      let failed = false;
      try {
        await runStep(step, this.handlers, controller.signal);
        this.clearFailure(step);
        failuresInARow = 0;
      } catch (error) {
        if (signal.aborted) break;
        this.recordFailure(step, error);
        failed = true;
      } finally {
        this.current = undefined;
      }
      if (failed && !signal.aborted) await this.backoff(loopBackoffMs(++failuresInARow, this.options.policy, this.random()));
    }
  }

  /** Waits after a failed step; only a newer desired state or the abort signal ends the wait early. */
  private backoff(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.endBackoff = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.endBackoff = done;
    });
  }

  private register(model: DesiredModel, path: string): void {
    this.options.runtime.register({
      name: model.name,
      sha256: model.sha256,
      path,
      ...(model.contextSize === undefined ? {} : { contextSize: model.contextSize }),
      ...(model.parallel === undefined ? {} : { parallel: model.parallel }),
      ...(model.memoryBytes === undefined ? {} : { memoryBytes: model.memoryBytes }),
    });
  }

  /** A success clears a failure of the same or an earlier stage: a fine download must not hide a bad checksum. */
  private clearFailure(step: Step): void {
    const stage = stageOf(step);
    if (!stage || !('model' in step)) return;
    const key = modelKey(step.model);
    const failure = this.failures[key];
    if (failure && STAGE_ORDER[failure.stage] <= STAGE_ORDER[stage]) delete this.failures[key];
  }

  private recordFailure(step: Step, error: unknown): void {
    const reason = error instanceof Error ? error.message : String(error);
    const stage = stageOf(step);
    if (!stage || !('model' in step)) {
      this.options.logger.error({ err: error, step: step.kind }, 'reconciliation step failed');
      return;
    }
    const key = modelKey(step.model);
    const failure = nextFailure(this.failures[key], stage, failureCode(stage, error), reason, this.now(), this.options.policy, this.random());
    this.failures[key] = failure;
    this.options.logger.warn({ model: step.model.name, step: step.kind, attempts: failure.attempts, permanent: failure.permanent, reason }, 'model step failed');
    if (failure.permanent) this.options.event?.('error', failure.code, `${step.model.name}: ${failure.reason}`, step.model.name);
  }

  private nextRetryIn(): number | undefined {
    const now = this.now();
    const due = Object.values(this.failures)
      .filter((failure) => !failure.permanent && failure.retryAt > now)
      .map((failure) => failure.retryAt - now);
    return due.length > 0 ? Math.min(...due) + 5 : undefined;
  }

  private sleep(ms: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => done(), ms);
      const done = (): void => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        resolve();
      };
      this.wakeUp = done;
    });
  }
}

const STAGE_ORDER = { download: 0, verify: 1, load: 2 } as const;

/** Delay after the n-th failed step in a row: base * 2^(n-1), capped, with jitter in [0.5, 1) of it. */
export function loopBackoffMs(failuresInARow: number, policy: RetryPolicy, random: number): number {
  const delay = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(Math.max(0, failuresInARow - 1), 30));
  return Math.round(delay * (0.5 + 0.5 * Math.min(Math.max(random, 0), 1)));
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function failureCode(stage: 'download' | 'verify' | 'load', error: unknown): ErrorCode {
  if (error instanceof InferenceFailure) return error.code;
  if (error instanceof ModelStoreError && error.code === 'CHECKSUM_MISMATCH') return 'CHECKSUM_MISMATCH';
  if (stage === 'load') return 'MODEL_LOAD_FAILED';
  return stage === 'verify' ? 'CHECKSUM_MISMATCH' : 'DOWNLOAD_FAILED';
}
