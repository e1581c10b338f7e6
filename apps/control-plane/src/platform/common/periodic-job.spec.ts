import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { PeriodicJob } from './periodic-job.js';

function capture() {
  const lines: string[] = [];
  const logger = pino({ level: 'error' }, new Writable({ write: (c: Buffer, _e, done) => (lines.push(c.toString()), done()) }));
  return { lines, logger };
}

describe('PeriodicJob', () => {
  it('runs at start and on its interval, never two runs at once, and stop() waits for the run in progress', async () => {
    const { logger } = capture();
    const job = new PeriodicJob('test job', logger);
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    job.start(5, async () => {
      active += 1;
      maxActive = Math.max(maxActive, active);
      await new Promise((r) => setTimeout(r, 20)); // slower than the interval
      active -= 1;
      runs += 1;
    });
    await new Promise((r) => setTimeout(r, 120));
    await job.stop();
    expect(active).toBe(0);
    expect(maxActive).toBe(1);
    expect(runs).toBeGreaterThanOrEqual(2);
    const after = runs;
    await new Promise((r) => setTimeout(r, 40));
    expect(runs).toBe(after);
  });

  it('logs a failed run by name and keeps going; direct runs queue behind timed ones', async () => {
    const { lines, logger } = capture();
    const job = new PeriodicJob('flaky job', logger);
    let calls = 0;
    job.start(10, async () => {
      calls += 1;
      if (calls === 1) throw new Error('boom');
    });
    const order: string[] = [];
    await job.serialize(async () => order.push('direct'));
    await new Promise((r) => setTimeout(r, 40));
    await job.stop();
    expect(lines.join('')).toContain('flaky job failed');
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(order).toEqual(['direct']);
  });

  it('skips the ticks that come while a run is in flight instead of queueing them: no backlog, and stop() waits for one run only', async () => {
    const { logger } = capture();
    const job = new PeriodicJob('slow job', logger);
    let runs = 0;
    const started = Date.now();
    job.start(10, async () => {
      await new Promise((r) => setTimeout(r, 100)); // ten ticks per run
      runs += 1;
    });
    await new Promise((r) => setTimeout(r, 350));
    const stopping = Date.now();
    await job.stop();
    const stopMs = Date.now() - stopping;
    const elapsed = Date.now() - started;
    // One run per ~100 ms at most (a run starts on the first tick after the previous one ended).
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(runs).toBeLessThanOrEqual(Math.ceil(elapsed / 100) + 1);
    // Only the run in progress is waited for, not ~30 queued ones.
    expect(stopMs).toBeLessThan(1000);
    const after = runs;
    await new Promise((r) => setTimeout(r, 250));
    expect(runs).toBe(after);
  });
});
