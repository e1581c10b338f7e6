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
});
