import type { ErrorCode } from '@flotilla/protocol';
import { InferenceFailure } from '../runtime/engine.js';
import type { JobResult, JobSpec, Runtime } from '../runtime/runtime.js';

export type UsageOrigin = 'control-plane' | 'local';

export type UsageFields = {
  requestId: string;
  model: string;
  origin: UsageOrigin;
  outcome: 'success' | 'failed' | 'cancelled';
  errorCode?: ErrorCode;
  promptTokens: number;
  completionTokens: number;
  ttftMs?: number;
  latencyMs: number;
  queueMs?: number;
};

/** Runs jobs on the runtime and records one usage record per finished request, whatever its origin. */
export class InferenceService {
  constructor(
    private readonly runtime: Runtime,
    private readonly onUsage: (usage: UsageFields) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get models(): string[] {
    return this.runtime.modelNames();
  }

  /** `jobId`: the spec's jobId, or its requestId when it has none. */
  cancel(jobId: string): boolean {
    return this.runtime.cancel(jobId);
  }

  async complete(spec: JobSpec, origin: UsageOrigin): Promise<JobResult> {
    const started = this.now();
    try {
      const result = await this.runtime.submit(spec);
      this.onUsage({
        requestId: spec.requestId,
        model: spec.model,
        origin,
        outcome: 'success',
        promptTokens: result.promptTokens,
        completionTokens: result.completionTokens,
        latencyMs: result.totalMs,
        queueMs: result.queueMs,
        ...(result.ttftMs === undefined ? {} : { ttftMs: result.ttftMs }),
      });
      return result;
    } catch (error) {
      const failure = error instanceof InferenceFailure ? error : new InferenceFailure('INTERNAL', String(error));
      this.onUsage({
        requestId: spec.requestId,
        model: spec.model,
        origin,
        outcome: failure.code === 'CANCELLED' ? 'cancelled' : 'failed',
        errorCode: failure.code,
        promptTokens: 0,
        completionTokens: 0,
        latencyMs: this.now() - started,
      });
      throw failure;
    }
  }
}
