import { z } from 'zod';
import { ConfigError } from '../config/config.js';
import type { RateLimitPolicy } from './token-bucket.js';

export const RATE_LIMIT_SETTINGS = Symbol('flotilla.rate-limit-settings');

/** The limited actions and the key each bucket is per. */
export type RateLimitScope = 'login-ip' | 'login-account' | 'enroll-ip' | 'enroll-token';

/** `null`: that limit is off. */
export type RateLimitSettings = Record<RateLimitScope, RateLimitPolicy | null>;

/**
 * Requests per minute, as a token bucket of that capacity refilled evenly over the minute; 0 turns a limit off.
 * Login is the brute-force target (and argon2 costs CPU), so it is tight; enrollment tokens are 256-bit random, so
 * its limits only stop floods, and stay wide enough for a site enrolling hundreds of boxes behind one address.
 */
const VARIABLES: Record<RateLimitScope, [string, number]> = {
  'login-ip': ['FLOTILLA_RATE_LIMIT_LOGIN_PER_IP', 30],
  'login-account': ['FLOTILLA_RATE_LIMIT_LOGIN_PER_ACCOUNT', 10],
  'enroll-ip': ['FLOTILLA_RATE_LIMIT_ENROLL_PER_IP', 600],
  'enroll-token': ['FLOTILLA_RATE_LIMIT_ENROLL_PER_TOKEN', 300],
};

export function loadRateLimitSettings(env: NodeJS.ProcessEnv = process.env): RateLimitSettings {
  const problems: string[] = [];
  const settings = {} as RateLimitSettings;
  for (const [scope, [variable, fallback]] of Object.entries(VARIABLES) as [RateLimitScope, [string, number]][]) {
    const parsed = z.coerce
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .default(fallback)
      .safeParse(env[variable]?.trim() ? env[variable] : undefined);
    if (!parsed.success) {
      problems.push(`${variable} must be a whole number of requests per minute (0 turns the limit off)`);
      continue;
    }
    settings[scope] = parsed.data === 0 ? null : { capacity: parsed.data, refillPerSecond: parsed.data / 60 };
  }
  if (problems.length) throw new ConfigError(problems);
  return settings;
}
