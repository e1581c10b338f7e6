/** A bucket's shape: `capacity` requests at once, refilled at `refillPerSecond`. */
export interface RateLimitPolicy {
  capacity: number;
  refillPerSecond: number;
}

export interface RateDecision {
  allowed: boolean;
  /** whole requests left after this one */
  remaining: number;
  /** when refused: seconds until one request is allowed again (at least 1, for Retry-After) */
  retryAfterSeconds: number;
}

/**
 * Where buckets live. The in-memory store serves one control-plane process; several replicas behind a load balancer
 * need a shared one (e.g. Redis with a Lua script doing the same arithmetic), hence the async interface.
 */
export interface RateLimitStore {
  take(key: string, policy: RateLimitPolicy, now?: number): Promise<RateDecision>;
  /**
   * Takes a token even from an empty bucket (it goes into debt) and says how long the caller must wait for the token it
   * took: a queue at the refill rate that delays rather than refuses.
   */
  reserve(key: string, policy: RateLimitPolicy, now?: number): Promise<{ waitMs: number }>;
  /** Gives one token back (a taken one that should not count), never beyond capacity. */
  give(key: string, policy: RateLimitPolicy, now?: number): Promise<void>;
}

interface Bucket {
  tokens: number;
  updatedAt: number;
  policy: RateLimitPolicy;
}

/** Token buckets in a Map, bounded: full (idle) buckets are dropped first, then the least recently used. */
export class InMemoryTokenBucketStore implements RateLimitStore {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly maxKeys = 100_000) {}

  take(key: string, policy: RateLimitPolicy, now = Date.now()): Promise<RateDecision> {
    return Promise.resolve(this.takeSync(key, policy, now));
  }

  reserve(key: string, policy: RateLimitPolicy, now = Date.now()): Promise<{ waitMs: number }> {
    return Promise.resolve(this.reserveSync(key, policy, now));
  }

  reserveSync(key: string, policy: RateLimitPolicy, now = Date.now()): { waitMs: number } {
    const tokens = this.current(key, policy, now) - 1;
    this.buckets.set(key, { tokens, updatedAt: now, policy });
    this.evict(now);
    if (tokens >= 0) return { waitMs: 0 };
    return { waitMs: policy.refillPerSecond > 0 ? Math.ceil((-tokens / policy.refillPerSecond) * 1000) : Number.POSITIVE_INFINITY };
  }

  give(key: string, policy: RateLimitPolicy, now = Date.now()): Promise<void> {
    const tokens = Math.min(policy.capacity, this.current(key, policy, now) + 1);
    this.buckets.set(key, { tokens, updatedAt: now, policy });
    return Promise.resolve();
  }

  takeSync(key: string, policy: RateLimitPolicy, now = Date.now()): RateDecision {
    const tokens = this.current(key, policy, now);
    if (tokens >= 1) {
      this.buckets.set(key, { tokens: tokens - 1, updatedAt: now, policy });
      this.evict(now);
      return { allowed: true, remaining: Math.floor(tokens - 1), retryAfterSeconds: 0 };
    }
    this.buckets.set(key, { tokens, updatedAt: now, policy });
    const wait = policy.refillPerSecond > 0 ? (1 - tokens) / policy.refillPerSecond : Number.POSITIVE_INFINITY;
    return { allowed: false, remaining: 0, retryAfterSeconds: Math.max(1, Math.ceil(Number.isFinite(wait) ? wait : 3600)) };
  }

  /** The bucket's tokens refilled up to `now` (capacity when new); removed from the map, so the caller re-inserts it last. */
  private current(key: string, policy: RateLimitPolicy, now: number): number {
    const existing = this.buckets.get(key);
    // Re-insert so Map order stays least-recently-used first.
    this.buckets.delete(key);
    return existing
      ? Math.min(policy.capacity, existing.tokens + (Math.max(0, now - existing.updatedAt) / 1000) * policy.refillPerSecond)
      : policy.capacity;
  }

  get size(): number {
    return this.buckets.size;
  }

  private evict(now: number): void {
    if (this.buckets.size <= this.maxKeys) return;
    for (const [key, bucket] of this.buckets) {
      if (this.buckets.size <= this.maxKeys) return;
      const refilled = bucket.tokens + ((now - bucket.updatedAt) / 1000) * bucket.policy.refillPerSecond;
      if (refilled >= bucket.policy.capacity) this.buckets.delete(key);
    }
    // Still too many: drop the least recently used.
    for (const key of this.buckets.keys()) {
      if (this.buckets.size <= this.maxKeys) return;
      this.buckets.delete(key);
    }
  }
}
