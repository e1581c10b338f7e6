import { describe, expect, it } from 'vitest';
import { InMemoryTokenBucketStore } from './token-bucket.js';

describe('token bucket', () => {
  const policy = { capacity: 3, refillPerSecond: 0.5 };

  it('allows a burst of `capacity`, then refuses with the seconds until the next token, and refills over time', () => {
    const store = new InMemoryTokenBucketStore();
    const t0 = 1_000_000;
    expect([1, 2, 3].map(() => store.takeSync('k', policy, t0).allowed)).toEqual([true, true, true]);
    expect(store.takeSync('k', policy, t0)).toEqual({ allowed: false, remaining: 0, retryAfterSeconds: 2 });
    expect(store.takeSync('k', policy, t0 + 1000)).toMatchObject({ allowed: false, retryAfterSeconds: 1 });
    expect(store.takeSync('k', policy, t0 + 2000)).toMatchObject({ allowed: true, remaining: 0 });
    // Other keys have their own bucket.
    expect(store.takeSync('other', policy, t0).allowed).toBe(true);
    // Never more than capacity, however long it idles.
    store.takeSync('k', policy, t0 + 3_600_000);
    expect(store.takeSync('k', policy, t0 + 3_600_000).remaining).toBe(1);
  });

  it('reserves into debt with the wait for the reserved token, and takes a given-back token again', async () => {
    const store = new InMemoryTokenBucketStore();
    const t0 = 1_000_000;
    // 3 free, then one token per 2 s: the 4th waits 2 s, the 5th 4 s (a queue, not a refusal).
    expect([1, 2, 3, 4, 5].map(() => store.reserveSync('k', policy, t0).waitMs)).toEqual([0, 0, 0, 2000, 4000]);
    expect(store.takeSync('k', policy, t0).allowed).toBe(false);
    // Giving back one reserved token shortens the queue by one slot.
    await store.give('k', policy, t0);
    expect(store.reserveSync('k', policy, t0).waitMs).toBe(4000);
    // Never more than capacity.
    await store.give('other', policy, t0);
    expect([1, 2, 3, 4].map(() => store.reserveSync('other', policy, t0).waitMs)).toEqual([0, 0, 0, 2000]);
  });

  it('stays bounded: idle full buckets go first, then the least recently used', async () => {
    const store = new InMemoryTokenBucketStore(2);
    await store.take('a', policy, 0);
    await store.take('b', policy, 0);
    await store.take('c', policy, 1);
    expect(store.size).toBe(2);
    // 'a' (least recently used) went; 'c' is there with one token spent.
    expect(store.takeSync('c', policy, 1).remaining).toBe(1);
  });
});
