// Devices held: the built control plane with N simulated devices (enrolled over REST, keepalive 5 s, telemetry every
// 5 s as outbox entries), side by side with a Mosquitto this suite starts itself and feeds the same clients and
// payloads. Measured over a steady-state window after everyone connected and a settle time.
import { resolve } from 'node:path';
import { startStack, joinFleet, openBenchFleet, perWorker, timeToAllConnected, drainTelemetry, scrapeLoopDelay, type Backend } from '../common.js';
import { timedGet } from '../http.js';
import type { SimFleetControl } from '../../sim/fleet-workers.js';
import type { SimFleetStats } from '../../sim/sim-fleet.js';
import { MosquittoProcess } from '../../sim/mosquitto.js';
import { trackChild } from '../cleanup.js';
import { ProcessSampler, type SampleWindow } from '../../sim/process-usage.js';
import { postgresBackendPids } from '../postgres.js';
import { distribution, fmt, MiB, ratio, sleep, type Distribution } from '../stats.js';
import type { Suite, SuiteContext, SuiteOutcome } from '../suite.js';

interface Window {
  seconds: number;
  /** the broker's (control plane's or Mosquitto's) process */
  process: SampleWindow;
  /** RSS before the fleet connected (after enrollment) */
  idleRssBytes: number;
  /** (mean RSS in the window - idle RSS) / devices */
  rssPerConnectionBytes: number;
  /** CPU % of one core per 1,000 connections */
  cpuPercentPer1k: number;
  /** the simulator's own CPU over the window (its processes), % of one core */
  simCpuPercent: number;
}

export interface BrokerSide {
  devices: number;
  timeToAllConnectedMs: number | null;
  connected: number;
  failedConnects: number;
  failedByReason: Record<string, number>;
  dropped: number;
  window: Window;
  telemetry: { offered: number; acked: number; resends: number; resendsInWindow: number };
}

export interface ControlPlaneSide extends BrokerSide {
  backend: Backend;
  enrollment: { seconds: number; errors: number; perSecond: number };
  postgres: SampleWindow | null;
  eventLoop: { p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  devicesApi: Distribution & { failures: number };
  errorLogLines: number;
  errorLogSample: string[];
}

export interface FleetSizeResult {
  devices: number;
  controlPlane: ControlPlaneSide[];
  mosquitto: BrokerSide | null;
  /** control plane (first backend) / Mosquitto */
  ratios: { cpu: number | null; rssPerConnection: number | null };
}

/** the bench's Mosquitto: no connection limit, no in-flight cap, no-delay sockets (fed exactly the control plane's clients) */
export const BENCH_MOSQUITTO_CONFIG = ['max_connections -1', 'max_inflight_messages 0', 'max_queued_messages 10000', 'set_tcp_nodelay true'];

function pidOf(pid: number | undefined, what: string): number {
  if (pid === undefined) throw new Error(`${what} is not running`);
  return pid;
}

interface Settings {
  settleMs: number;
  windowMs: number;
  connectTimeoutMs: number;
  drainTimeoutMs: number;
  /** which simulator, and devices per simulator worker process */
  perWorker: number;
}

async function steadyWindow(sampler: ProcessSampler, fleet: SimFleetControl, idleRss: number, n: number, windowMs: number, during?: () => Promise<void>): Promise<{ w: Window; pg?: SampleWindow }> {
  const simSampler = new ProcessSampler(() => fleet.pids, 1000);
  const t0 = performance.now();
  sampler.mark();
  simSampler.mark();
  const until = Date.now() + windowMs;
  if (during) await during();
  const rest = until - Date.now();
  if (rest > 0) await sleep(rest);
  const p = sampler.window();
  const sim = simSampler.window();
  simSampler.stop();
  const seconds = (performance.now() - t0) / 1000;
  return {
    w: {
      seconds,
      process: p,
      idleRssBytes: idleRss,
      rssPerConnectionBytes: (p.rssMeanBytes - idleRss) / n,
      cpuPercentPer1k: (p.cpuPercent / n) * 1000,
      simCpuPercent: sim.cpuPercent,
    },
  };
}

function sideOf(s0: SimFleetStats, s1: SimFleetStats, end: SimFleetStats): BrokerSide['telemetry'] {
  return { offered: end.counters.entriesSent, acked: end.counters.entriesAcked, resends: end.counters.entriesResent, resendsInWindow: s1.counters.entriesResent - s0.counters.entriesResent };
}

/** why CONNECTs failed, as far as the simulator tells (the rest: closed or unreachable) */
function failedByReason(s: SimFleetStats): Record<string, number> {
  const c = s.counters;
  return { refused: c.connectsRefused, timedOut: c.connectTimeouts, closed: Math.max(0, c.failedConnects - c.connectsRefused - c.connectTimeouts) };
}

async function controlPlaneSide(ctx: SuiteContext, backend: Backend, n: number, s: Settings): Promise<ControlPlaneSide> {
  ctx.log(`[${backend}] ${n} devices: starting the control plane`);
  // --cpu-prof DIR: two CPU profiles of the control plane (its SIGUSR2 profiler): the connect storm, the steady window
  const profileDir = ctx.flags.string('cpu-prof', '');
  const stack = await startStack(backend, profileDir ? { FLOTILLA_CPU_PROFILE_DIR: resolve(profileDir, `${backend}-${n}`) } : {});
  const toggleProfile = (what: string): void => {
    if (!profileDir || stack.cp.pid === undefined) return;
    process.kill(stack.cp.pid, 'SIGUSR2');
    ctx.log(`[${backend}] CPU profile: ${what} (written under ${resolve(profileDir, `${backend}-${n}`)})`);
  };
  const sampler = ProcessSampler.of(pidOf(stack.cp.pid, 'control plane'), 500);
  const dbName = stack.db?.name;
  const pgSampler = dbName ? new ProcessSampler(() => postgresBackendPids(dbName), 500) : undefined;
  let fleet: SimFleetControl | undefined;
  try {
    ctx.log(`[${backend}] enrolling ${n} devices`);
    let idleRss = 0;
    // RSS before the fleet connects, after enrollment: the per-connection figure is about connections only
    const joined = await joinFleet(
      stack,
      n,
      { perWorker: s.perWorker },
      async () => {
        sampler.mark();
        await sleep(2000);
        idleRss = sampler.window().rssMeanBytes;
        toggleProfile('connect storm started');
      },
    );
    fleet = joined.fleet;
    const f = fleet;
    const ttc = await timeToAllConnected(f, joined.joinStartedAt, s.connectTimeoutMs);
    toggleProfile('connect storm written');
    ctx.log(`[${backend}] ${(await f.stats()).everConnected}/${n} connected ${ttc === null ? `(not all within ${s.connectTimeoutMs / 1000} s)` : `in ${fmt(ttc / 1000)} s`}; settling ${s.settleMs / 1000} s`);
    await sleep(s.settleMs);
    const before = await f.stats();
    await scrapeLoopDelay(stack.cp.url); // resets the histogram: the next scrape covers the window only
    const latencies: number[] = [];
    let failures = 0;
    pgSampler?.mark();
    ctx.log(`[${backend}] steady window ${s.windowMs / 1000} s`);
    toggleProfile('steady window started');
    const { w } = await steadyWindow(sampler, f, idleRss, n, s.windowMs, async () => {
      const end = Date.now() + s.windowMs;
      while (Date.now() < end) {
        const r = await timedGet(`${stack.cp.url}/api/v1/devices?limit=100`, stack.admin);
        if (r.ok) latencies.push(r.ms);
        else failures++;
        await sleep(250);
      }
    });
    toggleProfile('steady window written');
    const pg = pgSampler?.window();
    const loop = await scrapeLoopDelay(stack.cp.url);
    const after = await f.stats();
    await drainTelemetry(f, s.drainTimeoutMs);
    const end = await f.stats();
    return {
      backend,
      devices: n,
      enrollment: { seconds: joined.enrollment.seconds, errors: joined.enrollment.errors, perSecond: joined.enrollment.identities.length / joined.enrollment.seconds },
      timeToAllConnectedMs: ttc,
      connected: after.connected,
      failedConnects: end.counters.failedConnects,
      failedByReason: failedByReason(end),
      dropped: end.counters.connectionsLost,
      window: w,
      postgres: pg ?? null,
      eventLoop: { p50Ms: loop.p50Ms ?? null, p99Ms: loop.p99Ms ?? null, maxMs: loop.maxMs ?? null },
      devicesApi: { ...distribution(latencies), failures },
      telemetry: sideOf(before, after, end),
      errorLogLines: stack.cp.errorLines.length,
      errorLogSample: stack.cp.errorLines.slice(0, 3),
    };
  } finally {
    sampler.stop();
    pgSampler?.stop();
    await fleet?.stop();
    await stack.dispose();
  }
}

async function mosquittoSide(ctx: SuiteContext, n: number, s: Settings): Promise<BrokerSide> {
  const broker = await MosquittoProcess.start({ config: BENCH_MOSQUITTO_CONFIG, onChild: trackChild });
  const sampler = ProcessSampler.of(pidOf(broker.pid, 'mosquitto'), 500);
  const fleet = await openBenchFleet({ mqttUrl: `mqtt://127.0.0.1:${broker.port}`, devices: n, perWorker: s.perWorker, plain: true });
  try {
    sampler.mark();
    await sleep(1000);
    const idleRss = sampler.window().rssMeanBytes;
    const t0 = Date.now();
    await fleet.join(n);
    const ttc = await timeToAllConnected(fleet, t0, s.connectTimeoutMs);
    ctx.log(`[mosquitto] ${(await fleet.stats()).everConnected}/${n} connected in ${fmt((ttc ?? NaN) / 1000)} s; settling ${s.settleMs / 1000} s`);
    await sleep(s.settleMs);
    const before = await fleet.stats();
    ctx.log(`[mosquitto] steady window ${s.windowMs / 1000} s`);
    const { w } = await steadyWindow(sampler, fleet, idleRss, n, s.windowMs);
    const after = await fleet.stats();
    await drainTelemetry(fleet, s.drainTimeoutMs);
    const end = await fleet.stats();
    return {
      devices: n,
      timeToAllConnectedMs: ttc,
      connected: after.connected,
      failedConnects: end.counters.failedConnects,
      failedByReason: failedByReason(end),
      dropped: end.counters.connectionsLost,
      window: w,
      telemetry: sideOf(before, after, end),
    };
  } finally {
    sampler.stop();
    await fleet.stop();
    await broker.stop();
  }
}

export function fleetSummary(r: FleetSizeResult): string[] {
  const lines: string[] = [];
  const m = r.mosquitto;
  for (const c of r.controlPlane) {
    const pg = c.postgres ? ` (+${fmt(c.postgres.cpuPercent)} % PostgreSQL)` : '';
    lines.push(
      `${r.devices} devices [${c.backend}]: all connected ${c.timeToAllConnectedMs === null ? 'NOT within the deadline' : `in ${fmt(c.timeToAllConnectedMs / 1000)} s`}, ` +
        `${c.failedConnects} failed connects, ${c.dropped} dropped; enrollment ${fmt(c.enrollment.perSecond, 0)}/s (${c.enrollment.errors} errors)`,
    );
    lines.push(
      `  CPU ${fmt(c.window.process.cpuPercent)} %${pg} vs Mosquitto ${fmt(m?.window.process.cpuPercent, 2)} % = ${fmt(ratio(c.window.process.cpuPercent, m?.window.process.cpuPercent))}x; ` +
        `RSS ${fmt(c.window.process.rssMeanBytes / MiB, 0)} MiB (${fmt(c.window.rssPerConnectionBytes / 1024)} KiB/connection) vs Mosquitto ${fmt((m?.window.process.rssMeanBytes ?? NaN) / MiB)} MiB ` +
        `(${fmt((m?.window.rssPerConnectionBytes ?? NaN) / 1024)} KiB/connection) = ${fmt(ratio(c.window.rssPerConnectionBytes, m?.window.rssPerConnectionBytes))}x per connection`,
    );
    lines.push(
      `  event-loop p99 ${fmt(c.eventLoop.p99Ms)} ms (max ${fmt(c.eventLoop.maxMs)}); GET /api/v1/devices p99 ${fmt(c.devicesApi.p99)} ms (p50 ${fmt(c.devicesApi.p50)}, ${c.devicesApi.count} calls, ${c.devicesApi.failures} failed); ` +
        `telemetry stored ${c.telemetry.acked}/${c.telemetry.offered} (Mosquitto ${m?.telemetry.acked ?? 'n/a'}/${m?.telemetry.offered ?? 'n/a'}), resends ${c.telemetry.resends}; error log lines ${c.errorLogLines}`,
    );
  }
  return lines;
}

async function run(ctx: SuiteContext): Promise<SuiteOutcome> {
  const f = ctx.flags;
  const sizes = f.numbers('devices', ctx.quick ? [20] : [1000]);
  const backends: Backend[] = [...(f.bool('no-postgres') ? [] : (['postgres'] as const)), ...(f.bool('pglite') ? (['pglite'] as const) : [])];
  const s: Settings = {
    settleMs: f.number('settle', ctx.quick ? 2 : 10) * 1000,
    windowMs: f.number('window', ctx.quick ? 5 : 30) * 1000,
    connectTimeoutMs: f.number('connect-timeout', 120) * 1000,
    drainTimeoutMs: f.number('drain-timeout', ctx.quick ? 10 : 40) * 1000,
    perWorker: perWorker(f),
  };
  const results: FleetSizeResult[] = [];
  const summary: string[] = [];
  for (const n of sizes) {
    const mosquitto = f.bool('no-mosquitto') ? null : await mosquittoSide(ctx, n, s);
    const controlPlane: ControlPlaneSide[] = [];
    for (const b of backends) controlPlane.push(await controlPlaneSide(ctx, b, n, s));
    const first = controlPlane[0];
    const r: FleetSizeResult = {
      devices: n,
      controlPlane,
      mosquitto,
      ratios: {
        cpu: ratio(first?.window.process.cpuPercent, mosquitto?.window.process.cpuPercent),
        rssPerConnection: ratio(first?.window.rssPerConnectionBytes, mosquitto?.window.rssPerConnectionBytes),
      },
    };
    results.push(r);
    const lines = fleetSummary(r);
    for (const l of lines) ctx.log(l);
    summary.push(...lines);
  }
  return {
    options: { sizes, backends, ...s, keepaliveSeconds: 5, telemetryIntervalMs: 5000, simulator: 'tools/src/sim (startSimFleet / startSimFleetWorkers)' },
    result: { sizes: results },
    summary,
  };
}

export const fleetSuite: Suite = {
  name: 'fleet',
  description: 'devices held: control plane (PostgreSQL, optionally PGlite) vs a Mosquitto fed the same clients',
  flagsHelp: ['--devices 1000,5000 (1000)', '--pglite (also on PGlite)', '--no-postgres', '--no-mosquitto', '--settle S (10)', '--window S (30)', '--connect-timeout S (120)', '--per-worker N (3000 devices per simulator process; 0 = always in workers)', '--cpu-prof DIR (CPU profiles of the control plane: connect storm and steady window; the profiler adds overhead)'],
  run,
};
