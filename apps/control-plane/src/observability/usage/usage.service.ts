import { Inject, Injectable } from '@nestjs/common';
import { usageWindowMs, type Usage, type UsageCounters } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import type { Database } from '../../platform/database/index.js';
import { Prisma } from '../../generated/prisma/client.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from '../../devices/ingest/device-ingest.settings.js';
import { PendingWrites } from '../../platform/events/pending-writes.js';
import { histogramQuantile, mergeHistogram, type RollupExtras } from './request-rollups.js';

interface Row {
  key: string | null;
  name?: string | null;
  requests: bigint | number;
  successes: bigint | number;
  failures: bigint | number;
  timeouts: bigint | number;
  cancelled: bigint | number;
  rejected: bigint | number;
  retries: bigint | number | null;
  tokens_in: bigint | number | null;
  tokens_out: bigint | number | null;
  latency_avg: number | string | null;
  latency_p50: number | string | null;
  latency_p95: number | string | null;
  ttft_p50: number | string | null;
  local: bigint | number;
}

// The same aggregates for every grouping. Latency figures are over successful requests, like the benchmark's.
const AGGREGATES = Prisma.sql`
  COUNT(*) AS requests,
  COUNT(*) FILTER (WHERE r.outcome = 'success') AS successes,
  COUNT(*) FILTER (WHERE r.outcome IN ('failed', 'timeout')) AS failures,
  COUNT(*) FILTER (WHERE r.outcome = 'timeout') AS timeouts,
  COUNT(*) FILTER (WHERE r.outcome = 'cancelled') AS cancelled,
  COUNT(*) FILTER (WHERE r.outcome = 'rejected') AS rejected,
  SUM(r.retries) AS retries,
  SUM(r.tokens_in) AS tokens_in,
  SUM(r.tokens_out) AS tokens_out,
  AVG(r.latency_ms) FILTER (WHERE r.outcome = 'success') AS latency_avg,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY r.latency_ms) FILTER (WHERE r.outcome = 'success') AS latency_p50,
  percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms) FILTER (WHERE r.outcome = 'success') AS latency_p95,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY r.ttft_ms) FILTER (WHERE r.outcome = 'success') AS ttft_p50,
  COUNT(*) FILTER (WHERE r.api_key_id IS NULL) AS local`;

/**
 * Per-model and per-device usage over a time window, for the dashboard. Windows up to the raw request retention are
 * read from `inference_requests` (the gateway's rows and the agents' local-endpoint records; exact percentiles);
 * pending gateway rows are flushed first so a request that just finished is counted. Longer windows are read from the
 * request rollups: hour rows from the hour the window starts in, minute rows for the current hour (up to one rollup
 * interval behind), percentiles from histograms (within about 19 %).
 */
@Injectable()
export class UsageService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly pendingWrites: PendingWrites,
    @Inject(REGISTRY_SETTINGS) private readonly settings: RegistrySettings,
  ) {}

  async usage(window: string, at?: Date): Promise<Usage> {
    if (usageWindowMs(window) > this.settings.requestRetentionMs) return this.fromRollups(window, at ?? new Date());
    return this.fromRequests(window, at);
  }

  /** From the raw rows (exact). */
  async fromRequests(window: string, at?: Date): Promise<Usage> {
    await this.pendingWrites.flushAll();
    const now = at ?? new Date(); // after the flush: its rows are stamped with the time they were written
    const since = new Date(now.getTime() - usageWindowMs(window));
    const prisma = this.db.prisma;
    const [totals, byModel, byDevice] = await Promise.all([
      prisma.$queryRaw<Row[]>`SELECT NULL AS key, ${AGGREGATES} FROM inference_requests r WHERE r.created_at >= ${since} AND r.created_at <= ${now}`,
      prisma.$queryRaw<Row[]>`
        SELECT COALESCE(r.model, 'none') AS key, ${AGGREGATES}
        FROM inference_requests r
        WHERE r.created_at >= ${since} AND r.created_at <= ${now}
        GROUP BY 1 ORDER BY 2 DESC, 1`,
      prisma.$queryRaw<Row[]>`
        SELECT COALESCE(r.device_id, CASE WHEN r.cloud THEN 'cloud' ELSE 'none' END) AS key, MAX(d.name) AS name, ${AGGREGATES}
        FROM inference_requests r LEFT JOIN devices d ON d.id = r.device_id
        WHERE r.created_at >= ${since} AND r.created_at <= ${now}
        GROUP BY 1 ORDER BY 3 DESC, 1`,
    ]);
    const empty: Row = { key: null, requests: 0, successes: 0, failures: 0, timeouts: 0, cancelled: 0, rejected: 0, retries: 0, tokens_in: 0, tokens_out: 0, latency_avg: null, latency_p50: null, latency_p95: null, ttft_p50: null, local: 0 };
    return {
      window,
      since: since.toISOString(),
      until: now.toISOString(),
      totals: counters(totals[0] ?? empty),
      byModel: byModel.map((r) => ({ model: r.key ?? 'none', ...counters(r) })),
      byDevice: byDevice.map((r) => ({ deviceId: r.key ?? 'none', deviceName: r.name ?? null, ...counters(r) })),
    };
  }

  /** From the request rollups (for windows longer than the raw retention). */
  async fromRollups(window: string, now: Date): Promise<Usage> {
    const since = new Date(now.getTime() - usageWindowMs(window));
    const hour = 3_600_000;
    const currentHour = new Date(Math.floor(now.getTime() / hour) * hour);
    const rows = await this.db.prisma.requestRollup.findMany({
      where: {
        OR: [
          { bucketSeconds: 3600, bucketStart: { gte: new Date(Math.floor(since.getTime() / hour) * hour), lt: currentHour } },
          { bucketSeconds: 60, bucketStart: { gte: currentHour, lte: now } },
        ],
      },
    });
    const totals = newSum();
    const byModel = new Map<string, Sum>();
    const byDevice = new Map<string, Sum>();
    const add = (s: Sum, r: (typeof rows)[number], extras: Partial<RollupExtras>) => {
      s.requests += r.requests;
      s.successes += r.successes;
      s.failures += r.failures;
      s.timeouts += r.timeouts;
      s.cancelled += Number(extras.cancelled ?? 0);
      s.rejected += Number(extras.rejected ?? 0);
      s.retries += r.retries;
      s.tokensIn += Number(r.tokensIn);
      s.tokensOut += Number(r.tokensOut);
      s.latencySumMs += Number(r.latencySumMs);
      s.local += Number(extras.local ?? 0);
      mergeHistogram(s.latency, extras.latency);
      mergeHistogram(s.ttft, extras.ttft);
    };
    const group = (map: Map<string, Sum>, key: string) => {
      let s = map.get(key);
      if (!s) map.set(key, (s = newSum()));
      return s;
    };
    for (const r of rows) {
      const extras = (r.latencyHistogram ?? {}) as Partial<RollupExtras>;
      add(totals, r, extras);
      add(group(byModel, r.model === '' ? 'none' : r.model), r, extras);
      add(group(byDevice, r.deviceId === '' ? 'none' : r.deviceId), r, extras);
    }
    const names = new Map(
      (await this.db.prisma.device.findMany({ where: { id: { in: [...byDevice.keys()] } }, select: { id: true, name: true } })).map((d) => [d.id, d.name]),
    );
    const order = (a: [string, Sum], b: [string, Sum]) => b[1].requests - a[1].requests || a[0].localeCompare(b[0]);
    return {
      window,
      since: since.toISOString(),
      until: now.toISOString(),
      totals: sumCounters(totals),
      byModel: [...byModel].sort(order).map(([model, s]) => ({ model, ...sumCounters(s) })),
      byDevice: [...byDevice].sort(order).map(([deviceId, s]) => ({ deviceId, deviceName: names.get(deviceId) ?? null, ...sumCounters(s) })),
    };
  }
}

interface Sum {
  requests: number;
  successes: number;
  failures: number;
  timeouts: number;
  cancelled: number;
  rejected: number;
  retries: number;
  tokensIn: number;
  tokensOut: number;
  latencySumMs: number;
  local: number;
  latency: Record<string, number>;
  ttft: Record<string, number>;
}

const newSum = (): Sum => ({ requests: 0, successes: 0, failures: 0, timeouts: 0, cancelled: 0, rejected: 0, retries: 0, tokensIn: 0, tokensOut: 0, latencySumMs: 0, local: 0, latency: {}, ttft: {} });

function sumCounters(s: Sum): UsageCounters {
  const ms = (v: number | null) => (v === null ? null : Math.round(v * 10) / 10);
  return {
    requests: s.requests,
    successes: s.successes,
    failures: s.failures,
    timeouts: s.timeouts,
    cancelled: s.cancelled,
    rejected: s.rejected,
    retries: s.retries,
    tokensIn: s.tokensIn,
    tokensOut: s.tokensOut,
    latencyAvgMs: s.successes > 0 ? ms(s.latencySumMs / s.successes) : null,
    latencyP50Ms: ms(histogramQuantile(s.latency, 0.5)),
    latencyP95Ms: ms(histogramQuantile(s.latency, 0.95)),
    ttftP50Ms: ms(histogramQuantile(s.ttft, 0.5)),
    local: s.local,
  };
}

function counters(r: Row): UsageCounters {
  const int = (v: bigint | number | null) => Number(v ?? 0);
  const ms = (v: number | string | null) => (v === null ? null : Math.round(Number(v) * 10) / 10);
  return {
    requests: int(r.requests),
    successes: int(r.successes),
    failures: int(r.failures),
    timeouts: int(r.timeouts),
    cancelled: int(r.cancelled),
    rejected: int(r.rejected),
    retries: int(r.retries),
    tokensIn: int(r.tokens_in),
    tokensOut: int(r.tokens_out),
    latencyAvgMs: ms(r.latency_avg),
    latencyP50Ms: ms(r.latency_p50),
    latencyP95Ms: ms(r.latency_p95),
    ttftP50Ms: ms(r.ttft_p50),
    local: int(r.local),
  };
}
