import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { LOGGER } from '../tokens.js';
import { AppError } from '../common/app-error.js';
import { MetricsRegistry } from '../metrics/metrics-registry.js';
import { RateLimitService, type RateLimitSlot } from './rate-limit.service.js';

/**
 * Password guessing limits that cannot be turned against the account's owner:
 * - failures per (client address, account) pair are refused (429) once the pair's budget is spent, so an attacker's
 *   address is stopped without touching anyone else's;
 * - failures per account, from all addresses together, are never refused but slowed: past the budget every attempt on
 *   the account waits until the account's limit lets one more through, so spreading guesses over many addresses does
 *   not multiply them, while the owner's correct password still gets through.
 * Both are taken before the password is checked (so parallel attempts cannot overrun them) and given back when it was
 * right: only failures count.
 */
@Injectable()
export class LoginThrottle {
  private readonly slowed;

  constructor(
    private readonly rateLimits: RateLimitService,
    @Inject(LOGGER) private readonly logger: Logger,
    metrics: MetricsRegistry,
  ) {
    this.slowed = metrics.counter({ name: 'flotilla_login_slowed_total', help: 'Login attempts delayed because their account had too many recent failures.' });
  }

  /** Runs `verify` (which throws UNAUTHORIZED for a wrong password) under the pair limit and the account slowdown. */
  async attempt<T>(address: string | undefined, account: string, verify: () => Promise<T>): Promise<T> {
    const taken: RateLimitSlot[] = [];
    const pair = this.rateLimits.policy('login-pair');
    if (pair) {
      const decision = await this.rateLimits.take('login-pair', `${address ?? 'unknown'}|${account}`, pair);
      if (!decision.allowed) throw this.rateLimits.refusal('login-pair', decision.retryAfterMs, 'too many failed logins from this address');
      taken.push(decision.slot);
    }
    const accountPolicy = this.rateLimits.policy('login-account');
    if (accountPolicy) {
      const { slot } = await this.rateLimits.waitFor('login-account', account, accountPolicy, (waitMs) => {
        this.slowed.inc();
        this.logger.warn({ account, waitMs }, 'login slowed: too many recent failures on this account');
      });
      taken.push(slot);
    }
    const giveBack = () => Promise.all(taken.map((slot) => this.rateLimits.give(slot)));
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
