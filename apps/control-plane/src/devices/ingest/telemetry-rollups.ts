import type { Telemetry } from '@flotilla/protocol';
import { Prisma } from '../../generated/prisma/client.js';
import { chunkedStatements } from '../../platform/database/bulk.js';

export const MINUTE_SECONDS = 60;
export const HOUR_SECONDS = 3600;

/** One bucket's aggregate of telemetry samples, merged into telemetry_rollups. */
export interface RollupDelta {
  deviceId: string;
  bucketSeconds: number;
  bucketStart: number;
  samples: number;
  cpuSum: number;
  cpuMax: number;
  memorySum: number;
  memoryMax: number;
  vramSum: number;
  vramMax: number;
  tpsSum: number;
  tpsMax: number;
  queueSum: number;
  queueMax: number;
  requests: number;
  failures: number;
  expiresAt: number;
}

export interface RollupRetention {
  minuteRetentionMs: number;
  hourRetentionMs: number;
}

/** Aggregates samples per device and bucket (minute and hour), by the sample's own `ts` [P-3.3]. */
export class RollupAccumulator {
  private readonly deltas = new Map<string, RollupDelta>();

  constructor(private readonly retention: RollupRetention) {}

  add(deviceId: string, sample: Telemetry): void {
    this.addTo(deviceId, MINUTE_SECONDS, sample, this.retention.minuteRetentionMs);
    this.addTo(deviceId, HOUR_SECONDS, sample, this.retention.hourRetentionMs);
  }

  get size(): number {
    return this.deltas.size;
  }

  values(): RollupDelta[] {
    return [...this.deltas.values()];
  }

  private addTo(deviceId: string, bucketSeconds: number, sample: Telemetry, retentionMs: number): void {
    const bucketMs = bucketSeconds * 1000;
    const bucketStart = Math.floor(sample.ts / bucketMs) * bucketMs;
    const key = `${deviceId}\u0000${bucketSeconds}\u0000${bucketStart}`;
    const vram = sample.gpus.reduce((sum, gpu) => sum + gpu.vramUsedBytes, 0);
    const queue = sample.inference.queuedRequests;
    const tps = sample.inference.tokensPerSecond;
    const d = this.deltas.get(key);
    if (!d) {
      this.deltas.set(key, {
        deviceId,
        bucketSeconds,
        bucketStart,
        samples: 1,
        cpuSum: sample.cpu.percent,
        cpuMax: sample.cpu.percent,
        memorySum: sample.memory.usedBytes,
        memoryMax: sample.memory.usedBytes,
        vramSum: vram,
        vramMax: vram,
        tpsSum: tps,
        tpsMax: tps,
        queueSum: queue,
        queueMax: queue,
        requests: sample.inference.completedRequests,
        failures: sample.inference.failedRequests,
        expiresAt: bucketStart + bucketMs + retentionMs,
      });
      return;
    }
    d.samples += 1;
    d.cpuSum += sample.cpu.percent;
    d.cpuMax = Math.max(d.cpuMax, sample.cpu.percent);
    d.memorySum += sample.memory.usedBytes;
    d.memoryMax = Math.max(d.memoryMax, sample.memory.usedBytes);
    d.vramSum += vram;
    d.vramMax = Math.max(d.vramMax, vram);
    d.tpsSum += tps;
    d.tpsMax = Math.max(d.tpsMax, tps);
    d.queueSum += queue;
    d.queueMax = Math.max(d.queueMax, queue);
    d.requests += sample.inference.completedRequests;
    d.failures += sample.inference.failedRequests;
  }
}

const float = (n: number) => Prisma.sql`${n}::double precision`;
const int = (n: number) => Prisma.sql`${Math.min(Math.round(n), 2_147_483_647)}::integer`;
// timestamp(3) without time zone holds UTC, as Prisma writes it
const timestamp = (ms: number) => Prisma.sql`${new Date(ms).toISOString()}::timestamp(3)`;

/**
 * Statements merging every delta into its bucket: averages are re-weighted by sample counts, maxima and counters
 * combined, so buckets filled over several flushes (or by late samples) stay exact. One statement per chunk of rows
 * under PostgreSQL's bind-parameter limit (17 per row: one statement would break past ~3,800 rows); run them all in
 * one transaction. Each delta has its own key, so no two chunks touch the same row.
 */
export function rollupUpsertSql(deltas: RollupDelta[]): Prisma.Sql[] {
  const rows = deltas.map(
    (d) => Prisma.sql`(${d.deviceId}, ${timestamp(d.bucketStart)}, ${int(d.bucketSeconds)}, ${int(d.samples)},
      ${float(d.cpuSum / d.samples)}, ${float(d.cpuMax)}, ${float(d.memorySum / d.samples)}, ${float(d.memoryMax)},
      ${float(d.vramSum / d.samples)}, ${float(d.vramMax)}, ${float(d.tpsSum / d.samples)}, ${float(d.tpsMax)},
      ${float(d.queueSum / d.samples)}, ${int(d.queueMax)}, ${int(d.requests)}, ${int(d.failures)}, ${timestamp(d.expiresAt)})`,
  );
  const avg = (column: string) =>
    Prisma.raw(`"${column}" = (t."${column}" * t."samples" + EXCLUDED."${column}" * EXCLUDED."samples") / (t."samples" + EXCLUDED."samples")`);
  const max = (column: string) => Prisma.raw(`"${column}" = GREATEST(t."${column}", EXCLUDED."${column}")`);
  const add = (column: string) => Prisma.raw(`"${column}" = t."${column}" + EXCLUDED."${column}"`);
  const updates = [
    avg('cpu_avg'),
    max('cpu_max'),
    avg('memory_avg_bytes'),
    max('memory_max_bytes'),
    avg('vram_avg_bytes'),
    max('vram_max_bytes'),
    avg('tokens_per_second_avg'),
    max('tokens_per_second_max'),
    avg('queue_avg'),
    max('queue_max'),
    add('requests'),
    add('failures'),
    add('samples'),
    max('expires_at'),
  ];
  return chunkedStatements(
    rows,
    (values) => Prisma.sql`INSERT INTO "telemetry_rollups" AS t ("device_id", "bucket_start", "bucket_seconds", "samples",
      "cpu_avg", "cpu_max", "memory_avg_bytes", "memory_max_bytes", "vram_avg_bytes", "vram_max_bytes",
      "tokens_per_second_avg", "tokens_per_second_max", "queue_avg", "queue_max", "requests", "failures", "expires_at")
    VALUES ${values}
    ON CONFLICT ("device_id", "bucket_seconds", "bucket_start") DO UPDATE SET ${Prisma.join(updates)}`,
  );
}
