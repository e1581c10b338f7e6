import type { ErrorCode } from '@flotilla/protocol';
import type { FailureStage, ModelFailure, Step, StepKind } from './types.js';

/** One handler per step kind; the mapped type makes a missing kind a compile error. */
export type StepHandlers = { [K in StepKind]: (step: Extract<Step, { kind: K }>, signal: AbortSignal) => Promise<void> };

export function runStep(step: Step, handlers: StepHandlers, signal: AbortSignal): Promise<void> {
  // TypeScript cannot correlate step.kind with the handler's parameter type; the map type guarantees it.
  const handler = handlers[step.kind] as (step: Step, signal: AbortSignal) => Promise<void>;
  return handler(step, signal);
}

export type RetryPolicy = { maxAttempts: number; baseDelayMs: number; maxDelayMs: number };

/**
 * Pure: the failure record after one more failed attempt. Exponential backoff with jitter in
 * [0.5, 1) of the delay so that many devices failing on the same source do not retry in step.
 */
export function nextFailure(
  previous: ModelFailure | undefined,
  stage: FailureStage,
  code: ErrorCode,
  reason: string,
  now: number,
  policy: RetryPolicy,
  random: number,
): ModelFailure {
  const attempts = (previous?.attempts ?? 0) + 1;
  const delay = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempts - 1));
  const jittered = Math.round(delay * (0.5 + 0.5 * Math.min(Math.max(random, 0), 1)));
  const permanent = attempts >= policy.maxAttempts;
  return {
    stage,
    code,
    reason: permanent ? `${reason} (gave up after ${attempts} attempt${attempts === 1 ? '' : 's'})` : reason,
    attempts,
    retryAt: now + jittered,
    permanent,
  };
}

/** Which stage a failing step counts against. */
export function stageOf(step: Step): FailureStage | undefined {
  switch (step.kind) {
    case 'download':
      return 'download';
    case 'verify':
      return 'verify';
    case 'load':
      return 'load';
    case 'unload':
    case 'evict':
    case 'pin':
    case 'report':
    case 'fail':
      return undefined;
  }
}

/** Desired states arrive retained and at-least-once: only a strictly newer version replaces the applied one. */
export function isNewerDesired(appliedVersion: number, incomingVersion: number): boolean {
  return incomingVersion > appliedVersion;
}
