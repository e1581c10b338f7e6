import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode } from '@flotilla/protocol';
import { RateLimiterMemory, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { AppError } from '../common/app-error.js';
import { MetricsRegistry } from '../metrics/metrics-registry.js';
import { RATE_LIMIT_SETTINGS, type RateLimitPolicy, type RateLimitScope, type RateLimitSettings } from './rate-limit.settings.js';

/** Which of a policy's two limiters a granted request was charged to, so that `give` can hand exactly that back. */
export interface RateLimitSlot {
  readonly limiter: RateLimiterAbstract;
  readonly key: string;
}

export type RateDecision = { allowed: true; slot: RateLimitSlot } | { allowed: false; retryAfterMs: number };

/** Retry-After is whole seconds, at least 1. */
export const retryAfterSeconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

interface PolicyLimiters {
  /** one request per refill interval */
  steady: RateLimiterAbstract;
  /** the rest of the capacity, once per time a full refill takes; absent for a capacity of 1 */
  burst: RateLimiterAbstract | null;
}

/**
 * The one rate-limit mechanism of the control plane (login, enrollment, gateway keys), on `rate-limiter-flexible`.
 * A policy of `capacity` per `capacity / refillPerSecond` seconds is the library's bursty pair: a steady limiter of one
 * request per refill interval, tried first, and a burst limiter of `capacity - 1` per full refill time. So a burst of
 * `capacity` passes at once, and once both are spent the next request is at most one interval away (Retry-After).
 * `limiter()` is the only place a store is chosen: in memory for one process; several replicas swap it for a shared
 * store (RateLimiterRedis with the same options) and nothing else changes.
 */
@Injectable()
export class RateLimitService {
  private readonly limited;
  private readonly limiters = new Map<string, PolicyLimiters>();

  constructor(
    @Inject(RATE_LIMIT_SETTINGS) private readonly settings: RateLimitSettings,
    metrics: MetricsRegistry,
  ) {
    this.limited = metrics.counter({
      name: 'flotilla_rate_limited_total',
      help: 'Requests refused by a rate limit, by bucket scope.',
      labelNames: ['scope'],
    });
  }

  /** The configured policy of a scope; `null` when that limit is off. */
  policy(scope: RateLimitScope): RateLimitPolicy | null {
    return this.settings[scope];
  }

  /**
   * Takes one request for `key` under `policy` in the namespace `scope`. A refused request is not counted (the library
   * counts it; we undo that), so retrying while refused does not push the next allowed moment further away.
   */
  async take(scope: string, key: string, policy: RateLimitPolicy): Promise<RateDecision> {
    const { steady, burst } = this.limitersFor(scope, policy);
    const steadyRefusal = await consumeOne(steady, key);
    if (!steadyRefusal) return { allowed: true, slot: { limiter: steady, key } };
    const burstRefusal = burst ? await consumeOne(burst, key) : null;
    if (burst && !burstRefusal) return { allowed: true, slot: { limiter: burst, key } };
    // Whichever window ends first frees the next request.
    const retryAfterMs = Math.min(steadyRefusal.msBeforeNext, burstRefusal?.msBeforeNext ?? Number.POSITIVE_INFINITY);
    return { allowed: false, retryAfterMs: Math.max(1, retryAfterMs) };
  }

  /**
   * Takes one request, waiting for it instead of being refused: a slowdown, not a lockout. Returns the slot and how
   * long it waited. Waiters retry when the window that refused them ends; each retry is one `take`.
   */
  async waitFor(scope: string, key: string, policy: RateLimitPolicy, onWait?: (retryAfterMs: number) => void): Promise<{ slot: RateLimitSlot; waitedMs: number }> {
    const since = Date.now();
    let decision = await this.take(scope, key, policy);
    if (!decision.allowed) onWait?.(decision.retryAfterMs);
    while (!decision.allowed) {
      const { retryAfterMs } = decision;
      await new Promise((resolve) => setTimeout(resolve, retryAfterMs));
      decision = await this.take(scope, key, policy);
    }
    return { slot: decision.slot, waitedMs: Date.now() - since };
  }

  /** Gives a granted request back (it should not count), never beyond the limit: only while its window still holds it. */
  async give(slot: RateLimitSlot): Promise<void> {
    const current = await slot.limiter.get(slot.key);
    if (current && current.consumedPoints > 0 && current.msBeforeNext > 0) await slot.limiter.reward(slot.key, 1);
  }

  /**
   * The configured limits of the unauthenticated entry points: takes one request from each named scope in order and
   * throws 429 RATE_LIMITED with Retry-After at the first refusal (later scopes are not charged).
   */
  async enforce(buckets: readonly (readonly [RateLimitScope, string | undefined])[]): Promise<void> {
    for (const [scope, key] of buckets) {
      const policy = this.settings[scope];
      if (!policy || key === undefined || key === '') continue;
      const decision = await this.take(scope, key, policy);
      if (!decision.allowed) throw this.refusal(scope, decision.retryAfterMs, 'too many requests');
    }
  }

  /**
   * Failure budgets (enrollment): throws 429 at the first configured scope whose budget is spent, without charging
   * anything. Paired with `charge` after a failure, so successes never count: a fleet enrolling at once with one token,
   * or many boxes behind one address, is never refused. Parallel failures can overrun a budget by at most the number
   * in flight, which is harmless where the secret guessed (a 256-bit token) cannot be guessed anyway.
   */
  async refuseIfSpent(buckets: readonly (readonly [RateLimitScope, string | undefined])[], reason: string): Promise<void> {
    for (const [scope, key] of buckets) {
      const policy = this.settings[scope];
      if (!policy || key === undefined || key === '') continue;
      const { steady, burst } = this.limitersFor(scope, policy);
      const steadyState = await steady.get(key);
      if (!steadyState || steadyState.remainingPoints > 0 || steadyState.msBeforeNext <= 0) continue;
      const burstState = burst ? await burst.get(key) : null;
      if (burst && (!burstState || burstState.remainingPoints > 0 || burstState.msBeforeNext <= 0)) continue;
      const retryAfterMs = Math.min(steadyState.msBeforeNext, burstState?.msBeforeNext ?? Number.POSITIVE_INFINITY);
      throw this.refusal(scope, Math.max(1, retryAfterMs), reason);
    }
  }

  /** Charges one failure to each configured scope (a spent budget stays spent; nothing is thrown). */
  async charge(buckets: readonly (readonly [RateLimitScope, string | undefined])[]): Promise<void> {
    for (const [scope, key] of buckets) {
      const policy = this.settings[scope];
      if (!policy || key === undefined || key === '') continue;
      await this.take(scope, key, policy);
    }
  }

  /** Counts a refusal of `scope` and builds its 429 answer. */
  refusal(scope: RateLimitScope, retryAfterMs: number, reason: string): AppError {
    this.limited.inc({ scope });
    const seconds = retryAfterSeconds(retryAfterMs);
    return new AppError(ErrorCode.RATE_LIMITED, `${reason}; retry in ${seconds} s`, { retryAfterSeconds: seconds }, { 'retry-after': String(seconds) });
  }

  private limitersFor(scope: string, policy: RateLimitPolicy): PolicyLimiters {
    const id = `${scope}/${policy.capacity}/${policy.refillPerSecond}`;
    let limiters = this.limiters.get(id);
    if (!limiters) {
      const interval = 1 / policy.refillPerSecond;
      limiters = {
        steady: this.limiter(`${id}/steady`, 1, interval),
        burst: policy.capacity > 1 ? this.limiter(`${id}/burst`, policy.capacity - 1, policy.capacity * interval) : null,
      };
      this.limiters.set(id, limiters);
    }
    return limiters;
  }

  /** The one construction point of the store. Memory records expire with their window, so idle keys cost nothing. */
  private limiter(keyPrefix: string, points: number, durationSeconds: number): RateLimiterAbstract {
    return new RateLimiterMemory({ keyPrefix, points, duration: durationSeconds });
  }
}

/** Consumes one point; on refusal undoes the library's count of it and returns the refusal, else null. */
async function consumeOne(limiter: RateLimiterAbstract, key: string): Promise<RateLimiterRes | null> {
  try {
    await limiter.consume(key, 1);
    return null;
  } catch (error) {
    if (!(error instanceof RateLimiterRes)) throw error;
    await limiter.reward(key, 1);
    return error;
  }
}
