import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { cpuPercent, ProcessSampler, readProcessUsage } from '../src/sim/process-usage.js';
import { waitFor } from './support/wait.js';

describe('process usage from /proc', () => {
  it('reads CPU time and RSS of a busy child, and samples it', async () => {
    // A child that spins for a while: its CPU time must grow, its RSS be that of a node process.
    const child = spawn(process.execPath, ['-e', 'const end = Date.now() + 20000; while (Date.now() < end);'], { stdio: 'ignore' });
    try {
      const pid = child.pid as number;
      const sampler = new ProcessSampler(pid, 200);
      const first = await readProcessUsage(pid);
      expect(first).toBeDefined();
      await waitFor(async () => ((await readProcessUsage(pid))?.cpuMs ?? 0) >= (first?.cpuMs ?? 0) + 200, 'the child to use 200 ms of CPU', 15_000);
      const later = await readProcessUsage(pid);
      expect(cpuPercent(first!, later!)).toBeGreaterThan(0);
      expect(later?.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
      await waitFor(() => sampler.samples.length >= 2, 'two samples', 10_000);
      sampler.stop();
      const summary = sampler.summary();
      expect(summary.cpuMaxPercent).toBeGreaterThan(0);
      expect(summary.rssMaxBytes).toBeGreaterThan(10 * 1024 * 1024);
    } finally {
      child.kill('SIGKILL');
    }
    expect(await readProcessUsage(2 ** 22 + 12345)).toBeUndefined();
  });
});
