import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode } from '@flotilla/protocol';
import { AppError } from '../common/app-error.js';
import { MetricsRegistry } from '../metrics/metrics-registry.js';
import { RATE_LIMIT_SETTINGS, type RateLimitScope, type RateLimitSettings } from './rate-limit.settings.js';
import { RATE_LIMIT_STORE } from './rate-limit.tokens.js';
import type { RateLimitStore } from './token-bucket.js';

/**
 * Rate limits for the unauthenticated entry points. `enforce` takes one token from each named bucket in order and
 * throws 429 RATE_LIMITED with Retry-After at the first empty one (later buckets are not charged).
 */
@Injectable()
export class RateLimitService {
  private readonly limited;

  constructor(
    @Inject(RATE_LIMIT_STORE) private readonly store: RateLimitStore,
    @Inject(RATE_LIMIT_SETTINGS) private readonly settings: RateLimitSettings,
    metrics: MetricsRegistry,
  ) {
    this.limited = metrics.counter({
      name: 'flotilla_rate_limited_total',
      help: 'Requests refused by a rate limit, by bucket scope.',
      labelNames: ['scope'],
    });
  }

  async enforce(buckets: readonly (readonly [RateLimitScope, string | undefined])[]): Promise<void> {
    for (const [scope, key] of buckets) {
      const policy = this.settings[scope];
      if (!policy || key === undefined || key === '') continue;
      const decision = await this.store.take(`${scope}:${key}`, policy);
      if (!decision.allowed) {
        this.limited.inc({ scope });
        throw new AppError(
          ErrorCode.RATE_LIMITED,
          `too many requests; retry in ${decision.retryAfterSeconds} s`,
          { retryAfterSeconds: decision.retryAfterSeconds },
          { 'retry-after': String(decision.retryAfterSeconds) },
        );
      }
    }
  }
}
