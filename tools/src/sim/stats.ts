/** Latency percentiles of one operation, in milliseconds. */
export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/**
 * A bounded latency recorder: keeps the last `capacity` samples (a ring) and the total count, so a long run costs
 * a fixed amount of memory.
 */
export class LatencyRecorder {
  private readonly samples: Float64Array;
  private next = 0;
  count = 0;
  max = 0;

  constructor(capacity = 20_000) {
    this.samples = new Float64Array(capacity);
  }

  record(ms: number): void {
    this.samples[this.next] = ms;
    this.next = (this.next + 1) % this.samples.length;
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  summary(): LatencySummary {
    const held = Math.min(this.count, this.samples.length);
    const sorted = Array.from(this.samples.subarray(0, held)).sort((a, b) => a - b);
    return { count: this.count, p50: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99), max: round(this.max) };
  }
}

/** Nearest-rank percentile of an ascending list (0 when empty), rounded to 0.1 ms. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return round(sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** A concurrency limiter for async work (enrollment, HTTP load). */
export async function mapLimit<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index] as T, index);
      }
    }),
  );
  return results;
}
