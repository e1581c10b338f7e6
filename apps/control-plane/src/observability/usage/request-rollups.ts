import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../../platform/tokens.js';
import { PeriodicJob } from '../../platform/common/periodic-job.js';
import type { Database } from '../../platform/database/index.js';
import { Prisma } from '../../generated/prisma/client.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from '../../devices/ingest/device-ingest.settings.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
/**
 * Each run recomputes this much before the last rolled-up minute as well: agents' local records arrive late (outbox
 * replay) with their own timestamps. Records older than this when they arrive stay in the raw rows only.
 */
export const ROLLUP_LOOKBACK_MS = 15 * MINUTE_MS;
/** raw rows rolled up per statement */
const CHUNK_MS = HOUR_MS;

/**
 * `latency_histogram` of a request rollup: latency and time-to-first-token histograms of the successful requests
 * (bucket index i counts values in (2^((i-1)/4), 2^(i/4)] ms; index 0 counts values up to 1 ms) and the outcomes the
 * table has no column for. `latency_sum_ms`, `latency_max_ms` and `ttft_sum_ms` are over successful requests too.
 */
export interface RollupExtras {
  latency: Record<string, number>;
  ttft: Record<string, number>;
  cancelled: number;
  rejected: number;
  /** requests agents served on their local endpoint (no API key) */
  local: number;
}

export interface RollupRun {
  from: Date;
  to: Date;
  minuteRows: number;
  hourRows: number;
}

/** Upper bound (ms) of histogram bucket `index`. */
export function bucketUpperMs(index: number): number {
  return 2 ** (index / 4);
}

/**
 * The q-quantile (0..1) of a histogram, interpolated linearly inside its bucket: buckets are 2^(1/4) wide, so the
 * result is within about 19 % of the exact value (exact percentiles come from raw rows).
 */
export function histogramQuantile(histogram: Record<string, number>, q: number): number | null {
  const buckets = Object.entries(histogram)
    .map(([index, count]) => [Number(index), count] as const)
    .filter(([, count]) => count > 0)
    .sort((a, b) => a[0] - b[0]);
  const total = buckets.reduce((sum, [, count]) => sum + count, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (const [index, count] of buckets) {
    if (seen + count >= rank) {
      const lower = index <= 0 ? 0 : bucketUpperMs(index - 1);
      const upper = bucketUpperMs(index);
      return lower + ((rank - seen) / count) * (upper - lower);
    }
    seen += count;
  }
  const last = buckets[buckets.length - 1];
  return last ? bucketUpperMs(last[0]) : null;
}

export function mergeHistogram(into: Record<string, number>, from: Record<string, number> | undefined): void {
  for (const [index, count] of Object.entries(from ?? {})) into[index] = (into[index] ?? 0) + Number(count);
}

const floorTo = (t: number, unit: number) => Math.floor(t / unit) * unit;

/**
 * Rolls finished requests up into minute and hour buckets per model and device (`request_rollups`), off the request
 * path: every `requestRollupIntervalMs` it recomputes whole minutes from `inference_requests` and whole hours from the
 * minute rows, replacing what was there, so re-runs are idempotent. The watermark is the newest minute row (minus
 * ROLLUP_LOOKBACK_MS); the retention sweep deletes raw rows only behind it.
 */
@Injectable()
export class RequestRollupService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly job: PeriodicJob;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(REGISTRY_SETTINGS) private readonly settings: RegistrySettings,
  ) {
    this.job = new PeriodicJob('request rollup', logger);
  }

  onApplicationBootstrap(): void {
    // `start` already runs one at a time: hand it the work itself, not `rollUp` (which would queue behind itself).
    this.job.start(this.settings.requestRollupIntervalMs, () => this.run(new Date()));
  }

  onModuleDestroy(): Promise<void> {
    return this.job.stop();
  }

  /** Rolls up every finished minute up to `now` (runs one at a time). */
  rollUp(now: Date = new Date()): Promise<RollupRun> {
    return this.job.serialize(() => this.run(now));
  }

  private async run(now: Date): Promise<RollupRun> {
    const prisma = this.db.prisma;
    const to = floorTo(now.getTime(), MINUTE_MS);
    const oldest = floorTo(now.getTime() - this.settings.requestRetentionMs, MINUTE_MS);
    const last = await prisma.requestRollup.aggregate({ where: { bucketSeconds: 60 }, _max: { bucketStart: true } });
    let from: number;
    if (last._max.bucketStart) {
      from = last._max.bucketStart.getTime() - ROLLUP_LOOKBACK_MS;
    } else {
      const first = await prisma.inferenceRequest.aggregate({ _min: { createdAt: true } });
      from = first._min.createdAt ? floorTo(first._min.createdAt.getTime(), MINUTE_MS) : to;
    }
    from = Math.max(from, oldest);
    let minuteRows = 0;
    let hourRows = 0;
    for (let start = from; start < to; start += CHUNK_MS) {
      const end = Math.min(start + CHUNK_MS, to);
      minuteRows += await this.rollUpMinutes(new Date(start), new Date(end));
      hourRows += await this.rollUpHours(new Date(floorTo(start, HOUR_MS)), new Date(floorTo(end - 1, HOUR_MS) + HOUR_MS));
    }
    if (minuteRows > 0) this.logger.debug({ from: new Date(from), to: new Date(to), minuteRows, hourRows }, 'requests rolled up');
    return { from: new Date(from), to: new Date(to), minuteRows, hourRows };
  }

  private rollUpMinutes(from: Date, to: Date): Promise<number> {
    const expiresSeconds = this.settings.requestMinuteRollupRetentionMs / 1000;
    return this.db.prisma.$executeRaw`
      WITH r AS (
        SELECT date_trunc('minute', created_at) AS bucket, COALESCE(model, '') AS model,
          COALESCE(device_id, CASE WHEN cloud THEN 'cloud' ELSE '' END) AS device_id,
          outcome::text AS outcome, latency_ms, ttft_ms, tokens_in, tokens_out, retries, api_key_id
        FROM inference_requests WHERE created_at >= ${from} AND created_at < ${to}
      ),
      hist AS (
        SELECT bucket, model, device_id, kind, jsonb_object_agg(idx, n) AS h FROM (
          SELECT bucket, model, device_id, kind, CEIL(4 * LOG(2, GREATEST(value, 1)::numeric))::int AS idx, COUNT(*) AS n
          FROM r CROSS JOIN LATERAL (VALUES ('latency', r.latency_ms), ('ttft', r.ttft_ms)) AS v(kind, value)
          WHERE r.outcome = 'success' AND value IS NOT NULL
          GROUP BY 1, 2, 3, 4, 5
        ) x GROUP BY 1, 2, 3, 4
      ),
      agg AS (
        SELECT bucket, model, device_id,
          COUNT(*)::int AS requests,
          (COUNT(*) FILTER (WHERE outcome = 'success'))::int AS successes,
          (COUNT(*) FILTER (WHERE outcome IN ('failed', 'timeout')))::int AS failures,
          (COUNT(*) FILTER (WHERE outcome = 'timeout'))::int AS timeouts,
          (COUNT(*) FILTER (WHERE outcome = 'cancelled'))::int AS cancelled,
          (COUNT(*) FILTER (WHERE outcome = 'rejected'))::int AS rejected,
          (COUNT(*) FILTER (WHERE api_key_id IS NULL))::int AS local,
          COALESCE(SUM(retries), 0)::int AS retries,
          COALESCE(SUM(tokens_in), 0)::bigint AS tokens_in,
          COALESCE(SUM(tokens_out), 0)::bigint AS tokens_out,
          COALESCE(SUM(latency_ms) FILTER (WHERE outcome = 'success'), 0)::bigint AS latency_sum_ms,
          COALESCE(MAX(latency_ms) FILTER (WHERE outcome = 'success'), 0)::int AS latency_max_ms,
          COALESCE(SUM(ttft_ms) FILTER (WHERE outcome = 'success'), 0)::bigint AS ttft_sum_ms
        FROM r GROUP BY 1, 2, 3
      )
      ${upsertRollups(60, expiresSeconds)}`;
  }

  /** Hours from their minute rows (which cover every hour this run touched). */
  private rollUpHours(from: Date, to: Date): Promise<number> {
    const expiresSeconds = this.settings.requestHourRollupRetentionMs / 1000;
    return this.db.prisma.$executeRaw`
      WITH m AS (
        SELECT date_trunc('hour', bucket_start) AS bucket, * FROM request_rollups
        WHERE bucket_seconds = 60 AND bucket_start >= ${from} AND bucket_start < ${to}
      ),
      hist AS (
        SELECT bucket, model, device_id, kind, jsonb_object_agg(idx, n) AS h FROM (
          SELECT bucket, model, device_id, kind, e.key AS idx, SUM(e.value::bigint) AS n
          FROM m CROSS JOIN LATERAL (VALUES ('latency'), ('ttft')) AS k(kind)
            CROSS JOIN LATERAL jsonb_each_text(m.latency_histogram -> k.kind) AS e
          GROUP BY 1, 2, 3, 4, 5
        ) x GROUP BY 1, 2, 3, 4
      ),
      agg AS (
        SELECT bucket, model, device_id, SUM(requests)::int AS requests, SUM(successes)::int AS successes,
          SUM(failures)::int AS failures, SUM(timeouts)::int AS timeouts, SUM(retries)::int AS retries,
          SUM(tokens_in)::bigint AS tokens_in, SUM(tokens_out)::bigint AS tokens_out,
          SUM(latency_sum_ms)::bigint AS latency_sum_ms, MAX(latency_max_ms)::int AS latency_max_ms, SUM(ttft_sum_ms)::bigint AS ttft_sum_ms,
          SUM((latency_histogram ->> 'cancelled')::int)::int AS cancelled, SUM((latency_histogram ->> 'rejected')::int)::int AS rejected,
          SUM((latency_histogram ->> 'local')::int)::int AS local
        FROM m GROUP BY 1, 2, 3
      )
      ${upsertRollups(3600, expiresSeconds)}`;
  }
}

/** The tail both rollup levels share: rows from the `agg` and `hist` CTEs, replacing what the bucket held. */
function upsertRollups(bucketSeconds: number, expiresSeconds: number): Prisma.Sql {
  return Prisma.sql`
      INSERT INTO request_rollups (bucket_start, bucket_seconds, model, device_id, requests, successes, failures, timeouts, retries,
        tokens_in, tokens_out, latency_sum_ms, latency_max_ms, ttft_sum_ms, latency_histogram, expires_at)
      SELECT a.bucket, ${bucketSeconds}::int, a.model, a.device_id, a.requests, a.successes, a.failures, a.timeouts, a.retries,
        a.tokens_in, a.tokens_out, a.latency_sum_ms, a.latency_max_ms, a.ttft_sum_ms,
        jsonb_build_object('latency', COALESCE(l.h, '{}'::jsonb), 'ttft', COALESCE(t.h, '{}'::jsonb),
          'cancelled', a.cancelled, 'rejected', a.rejected, 'local', a.local),
        a.bucket + ${expiresSeconds}::float8 * interval '1 second'
      FROM agg a
      LEFT JOIN hist l ON l.kind = 'latency' AND l.bucket = a.bucket AND l.model = a.model AND l.device_id = a.device_id
      LEFT JOIN hist t ON t.kind = 'ttft' AND t.bucket = a.bucket AND t.model = a.model AND t.device_id = a.device_id
      ON CONFLICT (bucket_seconds, bucket_start, model, device_id) DO UPDATE SET
        requests = EXCLUDED.requests, successes = EXCLUDED.successes, failures = EXCLUDED.failures, timeouts = EXCLUDED.timeouts,
        retries = EXCLUDED.retries, tokens_in = EXCLUDED.tokens_in, tokens_out = EXCLUDED.tokens_out,
        latency_sum_ms = EXCLUDED.latency_sum_ms, latency_max_ms = EXCLUDED.latency_max_ms, ttft_sum_ms = EXCLUDED.ttft_sum_ms,
        latency_histogram = EXCLUDED.latency_histogram, expires_at = EXCLUDED.expires_at`;
}
