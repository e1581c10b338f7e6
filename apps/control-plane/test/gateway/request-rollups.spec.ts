import { afterAll, beforeAll, expect, it } from 'vitest';
import { RequestRollupService, histogramQuantile } from '../../src/observability/usage/request-rollups.js';
import { UsageSchema, type Usage, type UsageCounters } from '@flotilla/protocol';
import { UsageService } from '../../src/observability/usage/usage.service.js';
import { RetentionService } from '../../src/observability/retention/retention.service.js';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';

const MINUTE_MS = 60_000;
const DAY_MS = 24 * 3_600_000;
const OUTCOMES = ['success', 'success', 'success', 'failed', 'timeout', 'cancelled', 'rejected', 'success'] as const;

/** `count` finished requests spread over the three hours before `now` (none in the current, unfinished minute). */
function requests(now: number, count: number, prefix: string) {
  return Array.from({ length: count }, (_, i) => {
    const device = [`dev-1`, `dev-2`, null][i % 3] ?? null;
    return {
      requestId: `${prefix}-${i}`,
      requestedModel: 'auto',
      model: ['m-a', 'm-b', 'm-a', null][i % 4] ?? null,
      deviceId: device,
      cloud: device === null && i % 2 === 0,
      latencyMs: 100 + ((i * 37) % 400),
      ttftMs: i % 5 === 0 ? null : 20 + ((i * 13) % 80),
      tokensIn: 10 + (i % 7),
      tokensOut: 5 + (i % 11),
      outcome: OUTCOMES[i % OUTCOMES.length] ?? 'success',
      retries: i % 4 === 0 ? 1 : 0,
      apiKeyId: i % 6 === 0 ? null : 'key-1',
      createdAt: new Date(now - 2 * MINUTE_MS - Math.floor((i * 3 * 3_600_000) / count)),
    };
  });
}

const counts = ({ latencyAvgMs: _a, latencyP50Ms: _p50, latencyP95Ms: _p95, ttftP50Ms: _t, ...rest }: UsageCounters) => rest;
const close = (rolled: number | null, exact: number | null) => {
  expect(rolled).not.toBeNull();
  expect(exact).not.toBeNull();
  expect(Math.abs((rolled ?? 0) - (exact ?? 0)) / (exact ?? 1)).toBeLessThanOrEqual(0.2);
};

describeBackends('request rollups and retention', (backend) => {
  let t: TestControlPlane;
  let now: number;

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    now = Date.now();
  });
  afterAll(() => t?.dispose());

  it('keeps raw rows past their retention until they are rolled up', async () => {
    const prisma = t.cp.database.prisma;
    await prisma.inferenceRequest.createMany({ data: requests(now - 8 * DAY_MS, 12, 'old') });
    expect((await t.cp.app.get(RetentionService).sweep(new Date(now))).requests).toBe(0);
    expect(await prisma.inferenceRequest.count()).toBe(12);
  });

  it('rolls finished requests up into minute and hour buckets that match the raw rows, idempotently', async () => {
    const prisma = t.cp.database.prisma;
    await prisma.inferenceRequest.createMany({ data: requests(now, 240, 'new') });
    const rollups = t.cp.app.get(RequestRollupService);
    const run = await rollups.rollUp(new Date(now));
    expect(run.minuteRows).toBeGreaterThan(0);
    expect(run.hourRows).toBeGreaterThan(0);

    const minutes = await prisma.requestRollup.aggregate({ where: { bucketSeconds: 60 }, _sum: { requests: true, successes: true, tokensOut: true } });
    const hours = await prisma.requestRollup.aggregate({ where: { bucketSeconds: 3600 }, _sum: { requests: true, successes: true, tokensOut: true } });
    const recent = { createdAt: { gte: new Date(now - 7 * DAY_MS) } };
    const raw = await prisma.inferenceRequest.aggregate({ where: recent, _count: true, _sum: { tokensOut: true } });
    expect(minutes._sum.requests).toBe(240);
    expect(hours._sum).toEqual(minutes._sum);
    expect(Number(minutes._sum.tokensOut)).toBe(raw._sum.tokensOut);

    // The same usage from the raw rows and from the rollups: counters exact, percentiles within a histogram bucket.
    const usage = t.cp.app.get(UsageService);
    const exact: Usage = await usage.fromRequests('4h', new Date(now));
    const rolled: Usage = await usage.fromRollups('4h', new Date(now));
    expect(exact.totals.requests).toBe(240);
    expect(counts(rolled.totals)).toEqual(counts(exact.totals));
    expect(rolled.byModel.map((m) => ({ model: m.model, ...counts(m) }))).toEqual(exact.byModel.map((m) => ({ model: m.model, ...counts(m) })));
    expect(rolled.byDevice.map((d) => ({ deviceId: d.deviceId, ...counts(d) }))).toEqual(exact.byDevice.map((d) => ({ deviceId: d.deviceId, ...counts(d) })));
    expect(Math.abs((rolled.totals.latencyAvgMs ?? 0) - (exact.totals.latencyAvgMs ?? 0))).toBeLessThanOrEqual(0.1);
    close(rolled.totals.latencyP50Ms, exact.totals.latencyP50Ms);
    close(rolled.totals.latencyP95Ms, exact.totals.latencyP95Ms);
    close(rolled.totals.ttftP50Ms, exact.totals.ttftP50Ms);

    // Re-runs (now, and a minute later with nothing new) leave every row as it was.
    const snapshot = () => prisma.requestRollup.findMany({ orderBy: [{ bucketSeconds: 'asc' }, { bucketStart: 'asc' }, { model: 'asc' }, { deviceId: 'asc' }] });
    const before = await snapshot();
    await rollups.rollUp(new Date(now));
    await rollups.rollUp(new Date(now + MINUTE_MS));
    expect(await snapshot()).toEqual(before);
  });

  it('deletes only expired raw rows and rollups, and serves long windows from the rollups', async () => {
    const prisma = t.cp.database.prisma;
    const expired = { bucketStart: new Date(now - 100 * DAY_MS), bucketSeconds: 3600, model: 'm-old', deviceId: 'dev-1', requests: 3, expiresAt: new Date(now - 10 * DAY_MS) };
    await prisma.requestRollup.create({ data: expired });
    const rollupsBefore = await prisma.requestRollup.count();
    const swept = await t.cp.app.get(RetentionService).sweep(new Date(now));
    expect(swept.requests).toBe(12);
    expect(swept.requestRollups).toBe(1);
    expect(await prisma.inferenceRequest.count()).toBe(240);
    expect(await prisma.requestRollup.count()).toBe(rollupsBefore - 1);

    const { adminToken } = await adminLogin(t.cp, t.isolated.dataDir);
    const res = await api(t.cp, '/api/v1/usage?window=30d', { token: adminToken });
    expect(res.status).toBe(200);
    const long = UsageSchema.parse(res.body);
    expect(long.totals.requests).toBe(240);
    expect(long.byModel.map((m) => m.model).sort()).toEqual(['m-a', 'm-b', 'none']);
  });
});

it('reads quantiles from a histogram to within a bucket', () => {
  // 2^(i/4) ms buckets: 100 ms lies in bucket 27 (~107 ms), 400 ms in bucket 35 (~431 ms)
  expect(histogramQuantile({}, 0.5)).toBeNull();
  const one = histogramQuantile({ '27': 1 }, 0.5) ?? 0;
  expect(one).toBeGreaterThan(2 ** (26 / 4));
  expect(one).toBeLessThanOrEqual(2 ** (27 / 4));
  expect(histogramQuantile({ '27': 50, '35': 50 }, 0.95) ?? 0).toBeGreaterThan(2 ** (34 / 4));
});
