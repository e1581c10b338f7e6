import { ErrorCode } from '@flotilla/protocol';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parsePrometheusText, sampleValue } from '../../../test/observability/prometheus-text.js';
import { AppError } from '../common/app-error.js';
import { MetricsRegistry } from '../metrics/metrics-registry.js';
import { RateLimitService, type RateDecision } from './rate-limit.service.js';
import type { RateLimitSettings } from './rate-limit.settings.js';

// The library keeps time with Date.now() and setTimeout, so vitest's fake clock drives it exactly.
const settings: RateLimitSettings = {
  'login-ip': { capacity: 2, refillPerSecond: 1 },
  'login-pair': null,
  'login-account': null,
  'enroll-ip': { capacity: 1, refillPerSecond: 1 },
  'enroll-token': { capacity: 1, refillPerSecond: 1 },
};
// 3 at once, then one every 2 s.
const policy = { capacity: 3, refillPerSecond: 0.5 };

const allowed = (d: RateDecision) => d.allowed;
const retryAfter = (d: RateDecision) => (d.allowed ? 0 : d.retryAfterMs);

describe('RateLimitService (rate-limiter-flexible, in memory)', () => {
  let metrics: MetricsRegistry;
  let limits: RateLimitService;
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
    metrics = new MetricsRegistry();
    limits = new RateLimitService(settings, metrics);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const take = (key = 'k') => limits.take('test', key, policy);

  it('allows a burst of `capacity`, then one per refill interval, telling a refused caller when the next one is free', async () => {
    expect([(await take()).allowed, (await take()).allowed, (await take()).allowed]).toEqual([true, true, true]);
    expect(retryAfter(await take())).toBe(2000);
    await vi.advanceTimersByTimeAsync(1000);
    // Refused requests do not count: the next one is still free at 2 s, not pushed back by the retries.
    expect(retryAfter(await take())).toBe(1000);
    expect(retryAfter(await take())).toBe(1000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(allowed(await take())).toBe(true);
    expect(retryAfter(await take())).toBe(2000);
    await vi.advanceTimersByTimeAsync(2000);
    expect(allowed(await take())).toBe(true);
    expect(allowed(await take())).toBe(false);
    // Other keys and other scopes are limited on their own.
    expect(allowed(await take('other'))).toBe(true);
    expect(allowed(await limits.take('another-scope', 'k', policy))).toBe(true);
    // Never more than capacity at once, however long it idles.
    await vi.advanceTimersByTimeAsync(3_600_000);
    expect([(await take()).allowed, (await take()).allowed, (await take()).allowed, (await take()).allowed]).toEqual([true, true, true, false]);
  });

  it('gives a granted request back while its window holds it, never beyond the limit', async () => {
    const first = await take();
    await take();
    const third = await take();
    expect(allowed(await take())).toBe(false);
    if (!third.allowed || !first.allowed) throw new Error('expected the first three to pass');
    await limits.give(third.slot);
    expect(allowed(await take())).toBe(true);
    expect(allowed(await take())).toBe(false);
    // A slot whose window has ended is not given back again (that would raise the limit above capacity).
    await vi.advanceTimersByTimeAsync(60_000);
    await limits.give(first.slot);
    expect([(await take()).allowed, (await take()).allowed, (await take()).allowed, (await take()).allowed]).toEqual([true, true, true, false]);
  });

  it('waits instead of refusing: past the limit, waiters get through one refill interval apart', async () => {
    for (let i = 0; i < 3; i++) await take();
    const start = Date.now();
    const done: number[] = [];
    const waited: number[] = [];
    const waiters = [0, 1, 2].map(() =>
      limits.waitFor('test', 'k', policy, (ms) => waited.push(ms)).then(() => {
        done.push(Date.now() - start);
      }),
    );
    await vi.advanceTimersByTimeAsync(10_000);
    await Promise.all(waiters);
    expect(waited).toEqual([2000, 2000, 2000]);
    expect(done).toEqual([2000, 4000, 6000]);
  });

  it('enforces the configured scopes in order with 429 RATE_LIMITED, Retry-After and a count per scope', async () => {
    await limits.enforce([['enroll-ip', '10.0.0.1'], ['enroll-token', 'abc']]);
    const refused = await limits.enforce([['enroll-ip', '10.0.0.1'], ['enroll-token', 'def']]).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AppError);
    expect(refused).toMatchObject({ code: ErrorCode.RATE_LIMITED, status: 429, headers: { 'retry-after': '1' }, details: { retryAfterSeconds: 1 } });
    // The refused scope stopped the list: 'def' was not charged, so it passes once the address may again.
    await vi.advanceTimersByTimeAsync(1000);
    await expect(limits.enforce([['enroll-ip', '10.0.0.1'], ['enroll-token', 'def']])).resolves.toBeUndefined();
    // Off, or no key: not limited.
    for (let i = 0; i < 5; i++) await limits.enforce([['login-pair', 'x'], ['login-ip', undefined]]);
    const families = parsePrometheusText(await metrics.render());
    expect(sampleValue(families, 'flotilla_rate_limited_total', { scope: 'enroll-ip' })).toBe(1);
  });

  it('counts failures only: refuses once the failure budget is spent, never charging a check, and says when to retry', async () => {
    const buckets = [['enroll-ip', '10.0.0.2'], ['enroll-token', 'tok']] as const;
    // Checks alone (successful enrollments) never spend anything.
    for (let i = 0; i < 10; i++) await limits.refuseIfSpent(buckets, 'too many failed enrollments');
    await limits.charge(buckets);
    const refused = await limits.refuseIfSpent(buckets, 'too many failed enrollments').catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: ErrorCode.RATE_LIMITED, status: 429, headers: { 'retry-after': '1' } });
    // Another address with another token is not affected; once the window ends the address may try again.
    await expect(limits.refuseIfSpent([['enroll-ip', '10.0.0.3'], ['enroll-token', 'other']], 'x')).resolves.toBeUndefined();
    await vi.advanceTimersByTimeAsync(1000);
    await expect(limits.refuseIfSpent(buckets, 'x')).resolves.toBeUndefined();
  });
});
