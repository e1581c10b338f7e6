import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { LOGGER } from '../tokens.js';
import { AppError } from '../common/app-error.js';
import { MetricsRegistry } from '../metrics/metrics-registry.js';
import { RATE_LIMIT_SETTINGS, type RateLimitSettings } from './rate-limit.settings.js';
import { RATE_LIMIT_STORE } from './rate-limit.tokens.js';
import type { RateLimitStore } from './token-bucket.js';

/**
 * Password guessing limits that cannot be turned against the account's owner:
 * - failures per (client address, account) pair are refused (429) once the pair's budget is spent, so an attacker's
 *   address is stopped without touching anyone else's;
 * - failures per account, from all addresses together, are never refused but slowed: past the budget every attempt on
 *   the account waits for its turn at the refill rate, so spreading guesses over many addresses does not multiply
 *   them, while the owner's correct password still gets through.
 * Both budgets are taken before the password is checked (so parallel attempts cannot overrun them) and given back
 * when it was right: only failures count.
 */
@Injectable()
export class LoginThrottle {
  private readonly limited;
  private readonly slowed;

  constructor(
    @Inject(RATE_LIMIT_STORE) private readonly store: RateLimitStore,
    @Inject(RATE_LIMIT_SETTINGS) private readonly settings: RateLimitSettings,
    @Inject(LOGGER) private readonly logger: Logger,
    metrics: MetricsRegistry,
  ) {
    // The same counter RateLimitService registers: the registry hands back the existing one.
    this.limited = metrics.counter({ name: 'flotilla_rate_limited_total', help: 'Requests refused by a rate limit, by bucket scope.', labelNames: ['scope'] });
    this.slowed = metrics.counter({ name: 'flotilla_login_slowed_total', help: 'Login attempts delayed because their account had too many recent failures.' });
  }

  /** Runs `verify` (which throws UNAUTHORIZED for a wrong password) under the pair limit and the account slowdown. */
  async attempt<T>(address: string | undefined, account: string, verify: () => Promise<T>): Promise<T> {
    const pair = this.settings['login-pair'];
    const pairKey = `login-pair:${address ?? 'unknown'}|${account}`;
    if (pair) {
      const decision = await this.store.take(pairKey, pair);
      if (!decision.allowed) {
        this.limited.inc({ scope: 'login-pair' });
        throw new AppError(
          ErrorCode.RATE_LIMITED,
          `too many failed logins from this address; retry in ${decision.retryAfterSeconds} s`,
          { retryAfterSeconds: decision.retryAfterSeconds },
          { 'retry-after': String(decision.retryAfterSeconds) },
        );
      }
    }
    const accountPolicy = this.settings['login-account'];
    const accountKey = `login-account:${account}`;
    if (accountPolicy) {
      const { waitMs } = await this.store.reserve(accountKey, accountPolicy);
      if (waitMs > 0) {
        this.slowed.inc();
        this.logger.warn({ account, waitMs }, 'login slowed: too many recent failures on this account');
        await new Promise((resolve) => setTimeout(resolve, waitMs));
      }
    }
    const giveBack = async () => {
      if (pair) await this.store.give(pairKey, pair);
      if (accountPolicy) await this.store.give(accountKey, accountPolicy);
    };
    try {
      const result = await verify();
      await giveBack();
      return result;
    } catch (error) {
      // Only a wrong e-mail or password is a failure; a database error is not the client's.
      if (!(error instanceof AppError && error.code === ErrorCode.UNAUTHORIZED)) await giveBack();
      throw error;
    }
  }
}
