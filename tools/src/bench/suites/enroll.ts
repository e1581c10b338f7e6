// Enrollment throughput: N devices enrolled over REST (one token per 250 devices, each device from its own loopback
// source address, 200 per address) with C requests in flight and the control plane's default enrollment limits,
// against the same control plane's /healthz at the same concurrency (the HTTP floor of this box, same run).
import { startStack, type Backend } from '../common.js';
import { enrollDevices } from '../enrollment.js';
import { distribution, fmt, ratio, type Distribution } from '../stats.js';
import type { Suite, SuiteContext, SuiteOutcome } from '../suite.js';

export interface EnrollResult {
  backend: Backend;
  devices: number;
  concurrency: number;
  seconds: number;
  perSecond: number;
  errors: number;
  errorsByReason: Record<string, number>;
  latencyMs: Distribution;
  /** GET /healthz at the same concurrency, same number of requests */
  floor: { perSecond: number; latencyMs: Distribution };
  /** enrollments/s over the target rate (10,000 in 60 s) */
  targetRatio: number | null;
}

const TARGET_PER_SECOND = 10_000 / 60;

async function floor(url: string, n: number, concurrency: number): Promise<{ perSecond: number; latencyMs: Distribution }> {
  const latencies: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        const s = performance.now();
        const res = await fetch(`${url}/healthz`);
        await res.arrayBuffer();
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { perSecond: n / ((performance.now() - t0) / 1000), latencyMs: distribution(latencies) };
}

async function run(ctx: SuiteContext): Promise<SuiteOutcome> {
  const n = ctx.flags.number('devices', ctx.quick ? 20 : 1000);
  const concurrency = ctx.flags.number('concurrency', 16);
  const perToken = ctx.flags.number('per-token', 250);
  const backends: Backend[] = [...(ctx.flags.bool('no-postgres') ? [] : (['postgres'] as const)), ...(ctx.flags.bool('pglite') ? (['pglite'] as const) : [])];
  const results: EnrollResult[] = [];
  const summary: string[] = [];
  for (const backend of backends) {
    const stack = await startStack(backend, {}, { keepRateLimits: !ctx.flags.bool('no-rate-limit') });
    try {
      const healthz = await floor(stack.cp.url, Math.min(n, 2000), concurrency);
      ctx.log(`[${backend}] enrolling ${n} devices, ${concurrency} in flight`);
      const e = await enrollDevices(stack.cp.url, stack.admin, n, { concurrency, perToken });
      const perSecond = e.identities.length / e.seconds;
      const r: EnrollResult = {
        backend,
        devices: n,
        concurrency,
        seconds: e.seconds,
        perSecond,
        errors: e.errors,
        errorsByReason: e.errorsByReason,
        latencyMs: distribution(e.latenciesMs),
        floor: healthz,
        targetRatio: ratio(perSecond, TARGET_PER_SECOND),
      };
      results.push(r);
      summary.push(
        `[${backend}] ${n} enrollments in ${fmt(r.seconds)} s = ${fmt(perSecond, 0)}/s (${r.errors} errors), p50 ${fmt(r.latencyMs.p50)} ms p99 ${fmt(r.latencyMs.p99)} ms; ` +
          `/healthz at the same concurrency ${fmt(healthz.perSecond, 0)}/s (enroll/healthz ${fmt(ratio(perSecond, healthz.perSecond), 3)}x); target 10,000 in 60 s (${fmt(TARGET_PER_SECOND, 0)}/s): ${fmt(r.targetRatio, 2)}x`,
      );
      for (const [why, k] of Object.entries(e.errorsByReason)) summary.push(`  error: ${k} x ${why}`);
    } finally {
      await stack.dispose();
    }
  }
  return { options: { devices: n, concurrency, perToken, devicesPerAddress: 200, rateLimits: !ctx.flags.bool('no-rate-limit'), backends }, result: { runs: results }, summary };
}

export const enrollSuite: Suite = {
  name: 'enroll',
  description: 'N enrollments over REST: rate and errors, vs /healthz at the same concurrency',
  flagsHelp: ['--devices N (1000)', '--concurrency N (16)', '--per-token N (250 devices per enrollment token)', '--no-rate-limit (turn the enrollment limits off)', '--pglite', '--no-postgres'],
  run,
};
