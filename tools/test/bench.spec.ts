import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { main } from '../src/bench/cli.js';
import { drainTelemetry, openBenchFleet } from '../src/bench/common.js';
import { MosquittoProcess } from '../src/sim/mosquitto.js';
import { createBenchDatabase, postgresBackendPids } from '../src/bench/postgres.js';
import { ProcessSampler, readProcessUsageSync } from '../src/sim/process-usage.js';
import { renderReport } from '../src/bench/report.js';
import { envelope, readLatest, writeResult } from '../src/bench/results.js';
import { pollUntil } from '../src/bench/stats.js';
import { Flags } from '../src/bench/suite.js';
import type { EnrollResult } from '../src/bench/suites/enroll.js';

// The benchmark suites are never tests (they measure, on a shared box). These check the pieces they are built from,
// cheaply: flags, the /proc sampler, the Mosquitto peer with the simulated fleet, result files and the report.
describe('bench runner', () => {
  it('parses suite names, valued flags, size lists and switches', () => {
    const { suites, flags } = Flags.parse(['fleet', 'liveness', '--devices', '1k,5000', '--quick', '--window=20', '--pglite']);
    expect(suites).toEqual(['fleet', 'liveness']);
    expect(flags.numbers('devices', [1])).toEqual([1000, 5000]);
    expect(flags.bool('quick')).toBe(true);
    expect(flags.bool('pglite')).toBe(true);
    expect(flags.number('window', 30)).toBe(20);
    expect(flags.number('settle', 10)).toBe(10);
  });

  it('refuses an unknown suite with exit code 2 and lists the suites on --help', async () => {
    expect(await main(['no-such-suite'], tmpdir())).toBe(2);
    expect(await main(['--help'], tmpdir())).toBe(0);
  });
});

describe('ProcessSampler', () => {
  it('reads CPU time and RSS of a process from /proc over a window', async () => {
    const sampler = ProcessSampler.of(process.pid, 50);
    const before = process.cpuUsage();
    sampler.mark();
    const end = performance.now() + 300;
    let x = 0;
    while (performance.now() < end) x += Math.sqrt(x + 1);
    await new Promise((done) => setTimeout(done, 100));
    const w = sampler.window();
    const used = process.cpuUsage(before);
    sampler.stop();
    expect(x).toBeGreaterThan(0);
    // the kernel's counters agree with Node's own, whatever the load on the box (a few 10 ms ticks of rounding)
    expect(Math.abs(w.cpuSeconds - (used.user + used.system) / 1e6)).toBeLessThan(0.05);
    expect(w.cpuSeconds).toBeGreaterThan(0);
    expect(w.cpuPercent).toBeCloseTo((w.cpuSeconds / w.seconds) * 100, 6);
    expect(w.rssMeanBytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(w.samples).toBeGreaterThan(1);
    expect(readProcessUsageSync(2 ** 22 + 1)).toBeUndefined();
  });

  it('finds the PostgreSQL backends serving one database', async () => {
    const admin = process.env.FLOTILLA_TEST_DATABASE_URL?.replace(/\/[^/]*$/, '/postgres');
    const db = await createBenchDatabase(admin);
    const client = new pg.Client({ connectionString: db.url });
    try {
      await client.connect();
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      expect(postgresBackendPids(db.name)).toContain(rows[0]?.pid);
    } finally {
      await client.end();
      await db.drop();
    }
  });
});

describe('Mosquitto peer with the simulated fleet', () => {
  it('starts on a free port, holds the clients from their source addresses, takes their telemetry, and sees crashes', async () => {
    const broker = await MosquittoProcess.start();
    const fleet = await openBenchFleet({ mqttUrl: `mqtt://127.0.0.1:${broker.port}`, devices: 20, perWorker: 3000, plain: true, behaviour: { telemetryIntervalMs: 200 } });
    try {
      await fleet.join(20);
      expect(await pollUntil(async () => (await fleet.stats()).connected === 20, 30_000, 20), 'all 20 connected').toBe(true);
      expect(await pollUntil(async () => (await fleet.stats()).counters.entriesAcked >= 40, 30_000, 20), '40 entries sent').toBe(true);
      await drainTelemetry(fleet, 30_000);
      const drained = await fleet.stats();
      expect(drained.counters.entriesAcked).toBe(drained.counters.entriesSent);
      expect(await fleet.crash(3)).toHaveLength(3);
      expect(await pollUntil(async () => (await fleet.stats()).connected === 17, 30_000, 20), '3 crashed').toBe(true);
      expect((await fleet.stats()).counters).toMatchObject({ failedConnects: 0, connectionsLost: 0, entriesResent: 0 });
    } finally {
      await fleet.stop();
      await broker.stop();
    }
    expect(broker.stopped).toBe(true);
  });
});

describe('simulated fleet over worker processes', () => {
  it('splits the devices over workers and sums their stats', async () => {
    const broker = await MosquittoProcess.start();
    const fleet = await openBenchFleet({ mqttUrl: `mqtt://127.0.0.1:${broker.port}`, devices: 30, perWorker: 10, plain: true, behaviour: { telemetryIntervalMs: 200 } });
    try {
      expect(fleet.pids).toHaveLength(3);
      expect(fleet.pids).not.toContain(process.pid);
      await fleet.join(30);
      expect(await pollUntil(async () => (await fleet.stats()).connected === 30, 30_000, 50), 'all 30 connected').toBe(true);
      expect(await pollUntil(async () => (await fleet.stats()).counters.entriesAcked >= 30, 30_000, 50), '30 entries sent').toBe(true);
      await drainTelemetry(fleet, 30_000);
      const s = await fleet.stats();
      expect(s.counters.entriesAcked, JSON.stringify(s)).toBe(s.counters.entriesSent);
      expect(s.everConnected).toBe(30);
      const crashed = await fleet.crash(4);
      expect(crashed).toHaveLength(4);
      expect(await pollUntil(async () => (await fleet.stats()).connected === 26, 30_000, 50), '4 crashed').toBe(true);
    } finally {
      await fleet.stop();
      await broker.stop();
    }
  });
});

describe('results and report', () => {
  it('writes a timestamped file and a latest copy, and renders the latest as a markdown table', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-results-'));
    try {
      const result: { runs: EnrollResult[] } = {
        runs: [
          {
            backend: 'postgres',
            devices: 1000,
            concurrency: 16,
            seconds: 12.5,
            perSecond: 80,
            errors: 0,
            errorsByReason: {},
            latencyMs: { count: 1000, p50: 150, p99: 400, max: 500, mean: 180 },
            floor: { perSecond: 900, latencyMs: { count: 1000, p50: 10, p99: 30, max: 40, mean: 12 } },
            targetRatio: 0.48,
          },
        ],
      };
      const file = await writeResult(dir, envelope('enroll', { devices: 1000 }, 1.5, result));
      expect(file).toMatch(/enroll-\d{4}-\d\d-\d\dT.*\.json$/);
      expect(JSON.parse(await readFile(join(dir, 'enroll-latest.json'), 'utf8'))).toMatchObject({ suite: 'enroll', result });
      const md = renderReport(await readLatest(dir));
      expect(md).toContain('### enroll');
      expect(md).toContain('| postgres | 1000 | 16 | 12.5 s | 80/s | 0 | 400 ms | 900/s | 0.48x |');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

