import { z } from 'zod';
import { blankAsUnset } from '../env-helpers.js';

export const RATE_LIMIT_SETTINGS = Symbol('flotilla.rate-limit-settings');

/** A limit's shape: `capacity` requests at once, then one more every 1/`refillPerSecond` seconds. */
export interface RateLimitPolicy {
  capacity: number;
  refillPerSecond: number;
}

/** The limited actions and the key each bucket is per. */
export type RateLimitScope = 'login-ip' | 'login-pair' | 'login-account' | 'enroll-ip' | 'enroll-token';

/** `null`: that limit is off. */
export type RateLimitSettings = Record<RateLimitScope, RateLimitPolicy | null>;

const perMinute = (variable: string, fallback: number) => {
  const error = `${variable} must be a whole number of requests per minute (0 turns the limit off)`;
  return blankAsUnset(z.coerce.number({ error }).int({ error }).min(0, { error }).max(1_000_000, { error }).default(fallback));
};

/**
 * Requests per minute: that many at once, then one more every 60/N seconds (see RateLimitService); 0 turns a limit off.
 * Login is the brute-force target (and argon2 costs CPU), so it is tight: attempts per address, failures per
 * (address, account) pair refused, failures per account only slowed (so nobody elsewhere can lock the owner out).
 * Enrollment counts failures only (unknown, expired, revoked or used-up tokens), per address and per token value:
 * tokens are 256-bit random, so these stop floods and fleets retrying a dead token; a rollout of thousands of boxes
 * with one token, hundreds behind one address, is never refused (its size is bounded by the token's uses).
 * A section of the control plane's config (composed by loadConfig).
 */
export const rateLimitEnvSchema = z.object({
  FLOTILLA_RATE_LIMIT_LOGIN_PER_IP: perMinute('FLOTILLA_RATE_LIMIT_LOGIN_PER_IP', 30),
  FLOTILLA_RATE_LIMIT_LOGIN_FAILURES_PER_PAIR: perMinute('FLOTILLA_RATE_LIMIT_LOGIN_FAILURES_PER_PAIR', 5),
  FLOTILLA_RATE_LIMIT_LOGIN_PER_ACCOUNT: perMinute('FLOTILLA_RATE_LIMIT_LOGIN_PER_ACCOUNT', 10),
  FLOTILLA_RATE_LIMIT_ENROLL_PER_IP: perMinute('FLOTILLA_RATE_LIMIT_ENROLL_PER_IP', 60),
  FLOTILLA_RATE_LIMIT_ENROLL_PER_TOKEN: perMinute('FLOTILLA_RATE_LIMIT_ENROLL_PER_TOKEN', 300),
});

const policy = (perMinute: number): RateLimitPolicy | null => (perMinute === 0 ? null : { capacity: perMinute, refillPerSecond: perMinute / 60 });

export function rateLimitSettingsFromEnv(e: z.infer<typeof rateLimitEnvSchema>): RateLimitSettings {
  return {
    'login-ip': policy(e.FLOTILLA_RATE_LIMIT_LOGIN_PER_IP),
    'login-pair': policy(e.FLOTILLA_RATE_LIMIT_LOGIN_FAILURES_PER_PAIR),
    'login-account': policy(e.FLOTILLA_RATE_LIMIT_LOGIN_PER_ACCOUNT),
    'enroll-ip': policy(e.FLOTILLA_RATE_LIMIT_ENROLL_PER_IP),
    'enroll-token': policy(e.FLOTILLA_RATE_LIMIT_ENROLL_PER_TOKEN),
  };
}
