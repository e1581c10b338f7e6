import type { ErrorCode } from '@flotilla/protocol';
import type { Logger } from '../logger.js';
import { InferenceFailure, type EngineModel, type GenerateOutput, type GenerateRequest, type InferenceEngine } from './engine.js';

export type RuntimeLimits = {
  memoryBudgetBytes: number;
  maxParallelRequests: number;
  maxQueuedRequests: number;
  /** 0: never unload for idleness. */
  idleUnloadMs: number;
};

export type RuntimeOptions = RuntimeLimits & {
  engine: InferenceEngine;
  logger: Logger;
  defaultContextSize: number;
  defaultParallel: number;
  now?: () => number;
  /** Called when the set of loaded models changes on the runtime's own initiative (idle unload, on-demand load). */
  onModelsChanged?: () => void;
  /** Called when a model serves a request, for least-recently-used bookkeeping on disk. */
  onModelUsed?: (sha256: string) => void;
  /**
   * How long an unload (or the end of a drain) waits for stopped generations to give their sequences back before it
   * fails them and frees the model anyway. Default 10 s.
   */
  stopTimeoutMs?: number;
  /** Something worth an event for the control plane (a model that could not be unloaded). */
  event?: (level: 'warn' | 'error', code: string, message: string, model?: string) => void;
};

export type ModelRegistration = {
  name: string;
  sha256: string;
  path: string;
  contextSize?: number;
  parallel?: number;
  memoryBytes?: number;
};

export type JobSpec = {
  requestId: string;
  /** The runtime's key for the job (cancel, duplicate check); defaults to requestId. The control plane's jobs use
   * requestId + attempt, so a failover attempt can queue behind the same request's earlier attempt still unwinding. */
  jobId?: string;
  model: string;
  request: GenerateRequest;
  /** 0..9, higher first; FIFO within a priority. */
  priority: number;
  /** Epoch ms after which the job is useless. */
  deadline?: number;
  signal?: AbortSignal;
  onTextDelta?: (text: string, tokens: number, ids?: readonly number[]) => void;
};

export type JobResult = GenerateOutput & {
  model: string;
  /** Time to first token from submission; absent when no token was produced. */
  ttftMs?: number;
  totalMs: number;
  queueMs: number;
};

export type LoadedModelInfo = {
  name: string;
  sha256: string;
  memoryBytes: number;
  contextSize: number;
  parallel: number;
  activeRequests: number;
  /** Free sequences in the engine's pool; parallel - activeRequests when the two agree. */
  freeSequences: number;
  lastUsedAt: number;
  /** Its unload failed: it serves nothing but its memory is still held; the next unload tries again. */
  unloadFailed?: true;
};

export type WindowStats = {
  windowMs: number;
  completedRequests: number;
  failedRequests: number;
  generatedTokens: number;
  tokensPerSecond: number;
  ttftMs: number[];
  latencyMs: number[];
};

type Entry = ModelRegistration & {
  model?: EngineModel;
  /** A model whose dispose failed: not served, its memory still in use, disposed again by the next unload or load. */
  held?: EngineModel;
  loading?: Promise<void>;
  active: number;
  lastUsedAt: number;
  /** Unloaded by the runtime (idle, memory, command): loaded again on demand only. */
  standby: boolean;
};

type Job = JobSpec & {
  order: number;
  submittedAt: number;
  startedAt?: number;
  firstTokenAt?: number;
  controller: AbortController;
  abortCode?: ErrorCode;
  resolve: (result: JobResult) => void;
  reject: (error: InferenceFailure) => void;
  deadlineTimer?: NodeJS.Timeout;
  removeAbortListener?: () => void;
  /** Failed by an unload or drain that stopped waiting for it; its generation may still be winding down. */
  abandoned?: boolean;
};

/**
 * Loads models through an InferenceEngine and runs chat jobs on them: a bounded priority queue, at most
 * maxParallelRequests generating (and at most `parallel` per model, one context sequence each), deadlines,
 * cancellation, on-demand loading within the memory budget and unloading after idle time.
 */
export class Runtime {
  private readonly entries = new Map<string, Entry>();
  /** Forgotten entries whose model could not be disposed, by `name@sha256`: still counted, unloaded again on request. */
  private readonly retired = new Map<string, Entry>();
  private readonly queue: Job[] = [];
  private readonly running = new Map<string, Job>();
  private limits: RuntimeLimits;
  private order = 0;
  private draining = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly now: () => number;
  private window = emptyWindow();
  private windowStartedAt: number;
  private generationMs = 0;

  constructor(private readonly options: RuntimeOptions) {
    this.now = options.now ?? Date.now;
    this.limits = {
      memoryBudgetBytes: options.memoryBudgetBytes,
      maxParallelRequests: options.maxParallelRequests,
      maxQueuedRequests: options.maxQueuedRequests,
      idleUnloadMs: options.idleUnloadMs,
    };
    this.windowStartedAt = this.now();
    this.scheduleIdleCheck();
  }

  get engine(): InferenceEngine {
    return this.options.engine;
  }

  setLimits(limits: Partial<RuntimeLimits>): void {
    this.limits = { ...this.limits, ...limits };
    this.scheduleIdleCheck();
    this.pump();
  }

  getLimits(): RuntimeLimits {
    return { ...this.limits };
  }

  /** Makes a verified model file servable (loaded on demand). Re-registering with another file replaces it. */
  register(registration: ModelRegistration): void {
    const existing = this.entries.get(registration.name);
    if (existing && existing.sha256 === registration.sha256) {
      Object.assign(existing, registration);
      return;
    }
    if (existing) this.unload(registration.name, { forget: true }).catch((error: unknown) => this.unloadFailed(registration.name, error));
    // Forgotten earlier but never freed: take it back (its held model is disposed before it loads again).
    const revived = this.retired.get(retiredKey(registration));
    if (revived) {
      this.retired.delete(retiredKey(registration));
      this.entries.set(registration.name, Object.assign(revived, registration, { standby: false }));
      return;
    }
    this.entries.set(registration.name, { ...registration, active: 0, lastUsedAt: this.now(), standby: false });
  }

  isRegistered(name: string): boolean {
    return this.entries.has(name);
  }

  modelNames(): string[] {
    return [...this.entries.keys()];
  }

  /** Loads a registered model, unloading least recently used idle models when the budget requires it. */
  async load(name: string): Promise<void> {
    const entry = this.entries.get(name);
    if (!entry) throw new InferenceFailure('MODEL_NOT_FOUND', `model ${name} is not on this device`);
    if (entry.model) return;
    if (!entry.loading) {
      entry.loading = this.doLoad(entry).finally(() => {
        entry.loading = undefined;
      });
    }
    return entry.loading;
  }

  /**
   * Unloads a model; with `forget` it is no longer servable. Jobs running on it fail with MODEL_NOT_FOUND. With
   * `sha256`, only that file's model is unloaded (another registration of the name is left alone).
   * When the engine fails to free the model, it stays counted (loadedModels() lists it with `unloadFailed`) and the
   * error is thrown: the caller reports it, and the next unload of it (the reconciler plans one) tries again.
   */
  async unload(name: string, options: { forget: boolean; sha256?: string }): Promise<void> {
    const retired = options.sha256 === undefined ? undefined : this.retired.get(retiredKey({ name, sha256: options.sha256 }));
    if (retired) {
      await this.disposeHeld(retired);
      this.retired.delete(retiredKey(retired));
      return;
    }
    const entry = this.entries.get(name);
    if (!entry || (options.sha256 !== undefined && entry.sha256 !== options.sha256)) return;
    if (options.forget) {
      this.entries.delete(name);
      for (const job of [...this.queue]) if (job.model === name) this.finishQueued(job, new InferenceFailure('MODEL_NOT_FOUND', `model ${name} was removed from this device`));
    } else {
      entry.standby = true;
    }
    for (const job of this.running.values()) if (job.model === name) this.abortJob(job, 'MODEL_NOT_FOUND');
    await entry.loading?.catch(() => undefined);
    const model = entry.model;
    entry.model = undefined;
    try {
      if (model) {
        // Let aborted generations release their sequences before the context goes away, for a bounded time: a
        // generation that does not stop must not hold the model (and the reconciler, or a shutdown) forever.
        await this.waitForStop(() => entry.active === 0, (job) => job.model === name, 'MODEL_NOT_FOUND');
        entry.held = model;
      }
      await this.disposeHeld(entry);
      if (model) this.options.logger.info({ model: name, forget: options.forget }, 'model unloaded');
    } catch (error) {
      if (options.forget) this.retired.set(retiredKey(entry), entry);
      throw error;
    }
  }

  /** Frees a model whose unload failed before; it stays held (and counted) until this succeeds. */
  private async disposeHeld(entry: Entry): Promise<void> {
    const held = entry.held;
    if (!held) return;
    await held.dispose();
    if (entry.held === held) entry.held = undefined;
  }

  loadedModels(): LoadedModelInfo[] {
    const loaded: LoadedModelInfo[] = [];
    for (const entry of [...this.entries.values(), ...this.retired.values()]) {
      if (entry.model) {
        loaded.push({
          name: entry.name,
          sha256: entry.sha256,
          memoryBytes: entry.model.memoryBytes,
          contextSize: entry.model.contextSize,
          parallel: entry.model.parallel,
          activeRequests: entry.active,
          freeSequences: entry.model.freeSequences,
          lastUsedAt: entry.lastUsedAt,
        });
      } else if (entry.held) {
        // Not served, but its memory is not free: it counts against the budget until an unload succeeds.
        const { memoryBytes, contextSize, parallel } = entry.held;
        loaded.push({ name: entry.name, sha256: entry.sha256, memoryBytes, contextSize, parallel, activeRequests: 0, freeSequences: 0, lastUsedAt: entry.lastUsedAt, unloadFailed: true });
      }
    }
    return loaded;
  }

  /** Models the runtime unloaded itself: still servable, loaded again on demand. */
  standby(): { name: string; sha256: string }[] {
    return [...this.entries.values()].filter((entry) => !entry.model && entry.standby).map(({ name, sha256 }) => ({ name, sha256 }));
  }

  counts(): { active: number; queued: number } {
    return { active: this.running.size, queued: this.queue.length };
  }

  isDraining(): boolean {
    return this.draining;
  }

  /** Queues a chat job; resolves with the result or rejects with an InferenceFailure. */
  submit(spec: JobSpec): Promise<JobResult> {
    return new Promise<JobResult>((resolve, reject) => {
      const fail = (code: ErrorCode, message: string): void => reject(new InferenceFailure(code, message));
      if (this.draining) return fail('DEVICE_DRAINING', 'the device is shutting down and takes no new requests');
      if (!this.entries.has(spec.model)) return fail('MODEL_NOT_FOUND', `model ${spec.model} is not on this device`);
      const id = jobIdOf(spec);
      if (this.running.has(id) || this.queue.some((job) => jobIdOf(job) === id)) {
        return fail('INVALID_REQUEST', `request ${id} is already running`);
      }
      if (spec.deadline !== undefined && spec.deadline <= this.now()) return fail('DEADLINE_EXCEEDED', 'the deadline passed before the request arrived');
      if (this.queue.length >= this.limits.maxQueuedRequests && this.running.size >= this.limits.maxParallelRequests) {
        return fail('QUEUE_FULL', `the queue holds ${this.limits.maxQueuedRequests} requests`);
      }
      const job: Job = { ...spec, order: this.order++, submittedAt: this.now(), controller: new AbortController(), resolve, reject };
      if (spec.signal) {
        if (spec.signal.aborted) return fail('CANCELLED', 'cancelled before it started');
        const onAbort = (): void => void this.cancel(id);
        spec.signal.addEventListener('abort', onAbort, { once: true });
        job.removeAbortListener = () => spec.signal?.removeEventListener('abort', onAbort);
      }
      if (spec.deadline !== undefined) {
        job.deadlineTimer = setTimeout(() => this.expire(job), Math.max(0, spec.deadline - this.now()));
      }
      // Highest priority first, then arrival order.
      const index = this.queue.findIndex((queued) => queued.priority < job.priority);
      if (index === -1) this.queue.push(job);
      else this.queue.splice(index, 0, job);
      this.pump();
    });
  }

  /** Stops a queued or running job (by its jobId); it fails with CANCELLED. Returns false when the id is unknown. */
  cancel(jobId: string, code: ErrorCode = 'CANCELLED'): boolean {
    const queued = this.queue.find((job) => jobIdOf(job) === jobId);
    if (queued) {
      this.finishQueued(queued, new InferenceFailure(code, code === 'CANCELLED' ? 'cancelled while queued' : 'stopped while queued'));
      return true;
    }
    const running = this.running.get(jobId);
    if (!running) return false;
    this.abortJob(running, code);
    return true;
  }

  /** Telemetry counters since the last call. */
  takeWindow(): WindowStats {
    const now = this.now();
    const window = this.window;
    const windowMs = Math.max(1, now - this.windowStartedAt);
    const seconds = this.generationMs / 1000;
    const stats = { ...window, windowMs, tokensPerSecond: seconds > 0 ? window.generatedTokens / seconds : 0 };
    this.window = emptyWindow();
    this.windowStartedAt = now;
    this.generationMs = 0;
    return stats;
  }

  /**
   * Stops taking jobs, lets running and queued ones finish for up to graceMs, then cancels what is left.
   * Resolves when nothing runs any more.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const until = this.now() + graceMs;
    while ((this.running.size > 0 || this.queue.length > 0) && this.now() < until) await delay(20);
    for (const job of [...this.queue]) this.finishQueued(job, new InferenceFailure('DEVICE_DRAINING', 'the device is shutting down'));
    for (const job of this.running.values()) this.abortJob(job, 'DEVICE_DRAINING');
    await this.waitForStop(() => this.running.size === 0, () => true, 'DEVICE_DRAINING');
  }

  resume(): void {
    this.draining = false;
  }

  async dispose(): Promise<void> {
    clearInterval(this.idleTimer);
    this.draining = true;
    for (const job of [...this.queue]) this.finishQueued(job, new InferenceFailure('DEVICE_DRAINING', 'the runtime stopped'));
    for (const job of this.running.values()) this.abortJob(job, 'DEVICE_DRAINING');
    // Shutting down: nothing retries afterwards, so a model that cannot be freed is reported and the rest still go.
    for (const name of [...this.entries.keys()]) await this.unload(name, { forget: true }).catch((error: unknown) => this.unloadFailed(name, error));
    for (const entry of [...this.retired.values()]) {
      await this.unload(entry.name, { forget: true, sha256: entry.sha256 }).catch((error: unknown) => this.unloadFailed(entry.name, error));
    }
  }

  private async doLoad(entry: Entry): Promise<void> {
    const options = {
      path: entry.path,
      contextSize: entry.contextSize ?? this.options.defaultContextSize,
      parallel: entry.parallel ?? this.options.defaultParallel,
    };
    // A model of this entry whose unload failed is freed first: never hold two copies.
    await this.disposeHeld(entry);
    const need = entry.memoryBytes ?? (await this.options.engine.estimateMemory(options));
    if (need > this.limits.memoryBudgetBytes) {
      throw new InferenceFailure('INSUFFICIENT_MEMORY', `model ${entry.name} needs ${need} bytes, the memory budget is ${this.limits.memoryBudgetBytes}`);
    }
    // Make room by unloading the least recently used models that are not serving anything.
    for (;;) {
      const used = this.loadedModels().reduce((sum, loaded) => sum + loaded.memoryBytes, 0);
      if (used + need <= this.limits.memoryBudgetBytes) break;
      const victim = [...this.entries.values()]
        .filter((candidate) => candidate.model && candidate.active === 0 && !this.queue.some((job) => job.model === candidate.name))
        .sort((a, b) => a.lastUsedAt - b.lastUsedAt)[0];
      if (!victim) {
        throw new InferenceFailure('INSUFFICIENT_MEMORY', `model ${entry.name} needs ${need} bytes; ${used} of ${this.limits.memoryBudgetBytes} are held by models in use`);
      }
      await this.unload(victim.name, { forget: false });
    }
    const started = this.now();
    const model = await this.options.engine.loadModel(options);
    if (this.entries.get(entry.name) !== entry) {
      // Forgotten while loading.
      await model.dispose();
      throw new InferenceFailure('MODEL_NOT_FOUND', `model ${entry.name} was removed while loading`);
    }
    entry.model = model;
    entry.standby = false;
    entry.lastUsedAt = this.now();
    this.options.logger.info({ model: entry.name, memoryBytes: model.memoryBytes, ms: this.now() - started }, 'model loaded');
    this.options.onModelsChanged?.();
  }

  private pump(): void {
    for (let index = 0; index < this.queue.length && this.running.size < this.limits.maxParallelRequests; ) {
      const job = this.queue[index];
      if (!job) break;
      const entry = this.entries.get(job.model);
      if (!entry) {
        this.finishQueued(job, new InferenceFailure('MODEL_NOT_FOUND', `model ${job.model} is not on this device`));
        continue;
      }
      if (!entry.model) {
        if (!entry.loading) {
          this.load(job.model).then(
            () => this.pump(),
            (error: unknown) => {
              const failure = error instanceof InferenceFailure ? error : new InferenceFailure('MODEL_LOAD_FAILED', String(error));
              for (const waiting of [...this.queue]) if (waiting.model === job.model) this.finishQueued(waiting, failure);
            },
          );
        }
        index++;
        continue;
      }
      if (entry.active >= entry.model.parallel) {
        index++;
        continue;
      }
      this.queue.splice(index, 1);
      // run() settles the job itself and does not reject; this only guards against a bug in its bookkeeping.
      this.run(job, entry, entry.model).catch((error: unknown) => this.options.logger.error({ err: error, requestId: job.requestId }, 'job bookkeeping failed'));
    }
  }

  /**
   * Waits up to stopTimeoutMs for `stopped`; then fails the running jobs that `matches` selects with `code` and lets
   * go of them (their generations are already aborted and may finish later: nothing waits for them any more).
   */
  private async waitForStop(stopped: () => boolean, matches: (job: Job) => boolean, code: ErrorCode): Promise<void> {
    const until = this.now() + (this.options.stopTimeoutMs ?? 10_000);
    while (!stopped() && this.now() < until) await delay(10);
    if (stopped()) return;
    for (const job of [...this.running.values()]) {
      if (!matches(job)) continue;
      this.options.logger.warn({ requestId: job.requestId, model: job.model, waitedMs: this.options.stopTimeoutMs ?? 10_000 }, 'a generation did not stop in time; failing it');
      this.release(job, this.entries.get(job.model));
      job.abandoned = true;
      this.window.failedRequests++;
      job.reject(new InferenceFailure(code, abortMessage(code)));
    }
  }

  /** A running job's bookkeeping ends: once, whether it finished or was abandoned. */
  private release(job: Job, entry: Entry | undefined): void {
    clearTimeout(job.deadlineTimer);
    job.removeAbortListener?.();
    this.running.delete(jobIdOf(job));
    if (entry) {
      entry.active = Math.max(0, entry.active - 1);
      entry.lastUsedAt = this.now();
    }
  }

  private unloadFailed(name: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.options.logger.error({ err: error, model: name }, 'unloading a model failed');
    this.options.event?.('error', 'MODEL_UNLOAD_FAILED', `${name}: unloading failed: ${message}`.slice(0, 2048), name);
  }

  private async run(job: Job, entry: Entry, model: EngineModel): Promise<void> {
    this.running.set(jobIdOf(job), job);
    entry.active++;
    entry.lastUsedAt = this.now();
    job.startedAt = this.now();
    this.options.onModelUsed?.(entry.sha256);
    try {
      // Token ids of a continuation are valid only for the file they came from; another file gets the text. [P-3.6]
      const { continuationTokens, ...rest } = job.request;
      const request = continuationTokens?.modelSha256 === entry.sha256 ? job.request : rest;
      const output = await model.generate(request, {
        signal: job.controller.signal,
        onTextDelta: (text, tokens, ids) => {
          if (job.firstTokenAt === undefined) job.firstTokenAt = this.now();
          job.onTextDelta?.(text, tokens, ids);
        },
      });
      if (job.abandoned) return;
      const end = this.now();
      if (job.firstTokenAt === undefined && output.completionTokens > 0) job.firstTokenAt = end;
      const result: JobResult = {
        ...output,
        model: job.model,
        totalMs: end - job.submittedAt,
        queueMs: job.startedAt - job.submittedAt,
        ...(job.firstTokenAt === undefined ? {} : { ttftMs: job.firstTokenAt - job.submittedAt }),
      };
      this.recordWindow(result, false, end - job.startedAt);
      job.resolve(result);
    } catch (error) {
      if (job.abandoned) return;
      let failure = error instanceof InferenceFailure ? error : new InferenceFailure('GENERATION_FAILED', String(error));
      if (job.abortCode) failure = new InferenceFailure(job.abortCode, abortMessage(job.abortCode));
      this.window.failedRequests++;
      job.reject(failure);
    } finally {
      if (!job.abandoned) this.release(job, entry);
      this.pump();
    }
  }

  private recordWindow(result: JobResult, failed: boolean, generationMs: number): void {
    if (failed) this.window.failedRequests++;
    else this.window.completedRequests++;
    this.window.generatedTokens += result.completionTokens;
    this.generationMs += generationMs;
    if (result.ttftMs !== undefined) this.window.ttftMs.push(result.ttftMs);
    this.window.latencyMs.push(result.totalMs);
  }

  private abortJob(job: Job, code: ErrorCode): void {
    if (job.abortCode === undefined) job.abortCode = code;
    job.controller.abort();
  }

  private expire(job: Job): void {
    if (this.queue.includes(job)) this.finishQueued(job, new InferenceFailure('DEADLINE_EXCEEDED', 'the deadline passed while queued'));
    else if (this.running.get(jobIdOf(job)) === job) this.abortJob(job, 'DEADLINE_EXCEEDED');
  }

  private finishQueued(job: Job, failure: InferenceFailure): void {
    const index = this.queue.indexOf(job);
    if (index >= 0) this.queue.splice(index, 1);
    clearTimeout(job.deadlineTimer);
    job.removeAbortListener?.();
    this.window.failedRequests++;
    job.reject(failure);
  }

  private scheduleIdleCheck(): void {
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
    if (this.limits.idleUnloadMs <= 0) return;
    const every = Math.max(100, Math.min(5000, Math.floor(this.limits.idleUnloadMs / 4)));
    this.idleTimer = setInterval(() => {
      this.unloadIdle().catch((error: unknown) => this.options.logger.error({ err: error }, 'idle check failed'));
    }, every);
    this.idleTimer.unref();
  }

  private async unloadIdle(): Promise<void> {
    const cutoff = this.now() - this.limits.idleUnloadMs;
    let changed = false;
    for (const entry of [...this.entries.values()]) {
      if (!entry.model || entry.active > 0 || entry.lastUsedAt > cutoff) continue;
      if (this.queue.some((job) => job.model === entry.name)) continue;
      this.options.logger.info({ model: entry.name, idleMs: this.now() - entry.lastUsedAt }, 'unloading idle model');
      try {
        await this.unload(entry.name, { forget: false });
      } catch (error) {
        // Still held and counted (unloadFailed in loadedModels()): the reconciler plans the unload again.
        this.unloadFailed(entry.name, error);
      }
      changed = true;
    }
    if (changed) this.options.onModelsChanged?.();
  }
}

function jobIdOf(spec: JobSpec): string {
  return spec.jobId ?? spec.requestId;
}

function emptyWindow(): Omit<WindowStats, 'windowMs' | 'tokensPerSecond'> {
  return { completedRequests: 0, failedRequests: 0, generatedTokens: 0, ttftMs: [], latencyMs: [] };
}

function abortMessage(code: ErrorCode): string {
  switch (code) {
    case 'CANCELLED':
      return 'cancelled';
    case 'DEADLINE_EXCEEDED':
      return 'the deadline passed during generation';
    case 'DEVICE_DRAINING':
      return 'the device is shutting down';
    case 'MODEL_NOT_FOUND':
      return 'the model was unloaded';
    default:
      return code;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function retiredKey(model: { name: string; sha256: string }): string {
  return `${model.name}@${model.sha256}`;
}
