import { describe, expect, it } from 'vitest';
import { Balancer, type BalancerOptions } from './balancer.js';

const options = (o: Partial<BalancerOptions> = {}): BalancerOptions => ({
  deviceConcurrency: 1,
  queueLimit: 100,
  queueWaitMs: 10_000,
  cooldownFailures: 1,
  cooldownMs: 300,
  ...o,
});

describe('Balancer', () => {
  it('wakes a request waiting for a device in cooldown when the cooldown ends, not at the queue timeout', async () => {
    const balancer = new Balancer(options());
    const first = await balancer.acquire({ model: 'm', candidates: ['d1'] });
    first.release('device-failure'); // one failure is enough here: d1 cools down for 300 ms
    expect(balancer.snapshot()['d1']?.coolingDown).toBe(true);

    const started = Date.now();
    const waited = await balancer.acquire({ model: 'm', candidates: ['d1'] });
    const ms = Date.now() - started;
    expect(waited.deviceId).toBe('d1');
    // the cooldown is 300 ms; the queue wait 10 s (the loaded box gets a generous margin, far below 10 s)
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ms).toBeLessThan(5_000);
    waited.release('success');
  });

  it('serves a waiter from the device whose cooldown ends while its other candidate stays busy', async () => {
    const balancer = new Balancer(options({ cooldownMs: 200 }));
    const a = await balancer.acquire({ model: 'm', candidates: ['a'] });
    a.release('device-failure');
    // b is busy for good: only a's cooldown end can serve the waiter
    const b = await balancer.acquire({ model: 'm', candidates: ['b'] });
    const started = Date.now();
    const waited = await balancer.acquire({ model: 'm', candidates: ['a', 'b'] });
    expect(waited.deviceId).toBe('a');
    expect(Date.now() - started).toBeLessThan(5_000);
    b.release('success');
  });

  it('never leases a device its gate refuses, and serves a waiter once the gate opens and `wake` is called', async () => {
    const balancer = new Balancer(options());
    const online = new Set<string>();
    balancer.gateBy((d) => online.has(d));
    expect(balancer.freeSlots(['d1'])).toBe(0);
    let leased: string | undefined;
    const waiting = balancer.acquire({ model: 'm', candidates: ['d1'] }).then((l) => {
      leased = l.deviceId;
      return l;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(leased).toBeUndefined();
    online.add('d1');
    balancer.wake();
    expect((await waiting).deviceId).toBe('d1');
  });
});
