// Markdown tables from the latest result of each suite (`node tools/bench/report.mjs` prints them for
// docs/benchmarks.md). Every figure sits next to its same-run peer or the issue's target.
import type { ResultEnvelope } from './results.js';
import { fmt, MiB, ratio } from './stats.js';
import type { EnrollResult } from './suites/enroll.js';
import type { FleetSizeResult } from './suites/fleet.js';
import type { GatewayResult } from './suites/gateway.js';
import type { DetectionResult } from './suites/liveness.js';
import type { PlacementResult } from './suites/placement.js';
import type { RestartResult } from './suites/restart.js';

type Row = (string | number)[];

function table(head: string[], rows: Row[]): string {
  const line = (cells: (string | number)[]): string => `| ${cells.map(String).join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

const s = (ms: number | null | undefined, digits = 1): string => (ms === null || ms === undefined ? 'not reached' : `${fmt(ms / 1000, digits)} s`);
const x = (v: number | null | undefined, digits = 2): string => (v === null || v === undefined ? 'n/a' : `${fmt(v, digits)}x`);

function when(e: ResultEnvelope<unknown>): string {
  const quick = e.options.quick === true ? ', **quick smoke run: sizes too small to mean anything**' : '';
  return `_${e.at.slice(0, 16).replace('T', ' ')} UTC, Node ${e.node}, ${e.cpus} cores, load ${fmt(e.loadAverage.start)} → ${fmt(e.loadAverage.end)}${quick}_`;
}

function fleet(e: ResultEnvelope<{ sizes: FleetSizeResult[] }>): string {
  const rows: Row[] = [];
  for (const r of e.result.sizes) {
    const m = r.mosquitto;
    for (const c of r.controlPlane) {
      rows.push([
        r.devices.toLocaleString('en-US'),
        c.backend,
        `${s(c.timeToAllConnectedMs)} (Mosquitto ${s(m?.timeToAllConnectedMs)})`,
        `${c.failedConnects} (Mosquitto ${m?.failedConnects ?? 'n/a'})`,
        `${fmt(c.window.process.cpuPercent)} %${c.postgres ? ` (+${fmt(c.postgres.cpuPercent)} % PG)` : ''} vs ${fmt(m?.window.process.cpuPercent, 2)} % = ${x(ratio(c.window.process.cpuPercent, m?.window.process.cpuPercent), 1)}`,
        `${fmt(c.window.process.rssMeanBytes / MiB, 0)} MiB; ${fmt(c.window.rssPerConnectionBytes / 1024)} vs ${fmt((m?.window.rssPerConnectionBytes ?? NaN) / 1024)} KiB/conn = ${x(ratio(c.window.rssPerConnectionBytes, m?.window.rssPerConnectionBytes), 1)}`,
        `${fmt(c.eventLoop.p99Ms, 0)} ms`,
        `${fmt(c.devicesApi.p99, 0)} ms`,
        `${c.telemetry.acked}/${c.telemetry.offered}, ${c.telemetry.resends} resends`,
      ]);
    }
  }
  rows.push(['target (10,000)', 'postgres', '≤ 60 s', '0', '< 50 %', '< 500 MB', '< 50 ms', '< 100 ms', 'all, 0 resends']);
  return [
    '### fleet: devices held (control plane vs Mosquitto, same clients)',
    when(e),
    '',
    table(['devices', 'database', 'all connected', 'failed connects', 'CPU (1 core = 100 %) CP vs Mosquitto', 'RSS; per connection CP vs Mosquitto', 'event-loop p99', 'GET /devices p99', 'telemetry stored / offered'], rows),
  ].join('\n');
}

function liveness(e: ResultEnvelope<{ crash: DetectionResult; silence: DetectionResult }>): string {
  const o = e.options;
  const rows = [e.result.crash, e.result.silence].map((r) => [
    r.kind,
    `${String(o.devices)} devices`,
    `${r.detected}/${r.devices}`,
    `${fmt(r.latencyMs.p50, 0)} ms`,
    `${fmt(r.latencyMs.p99, 0)} ms`,
    `${fmt(r.latencyMs.max, 0)} ms`,
    `${fmt(r.targetMs, 0)} ms`,
    x(r.targetRatio),
  ]);
  return ['### liveness: shown offline after a crash or a silence', when(e), '', table(['event', 'fleet', 'shown offline', 'p50', 'p99', 'max', 'target', 'max / target'], rows)].join('\n');
}

function placement(e: ResultEnvelope<PlacementResult>): string {
  const r = e.result;
  return [
    '### placement: deployments over a fleet',
    when(e),
    '',
    table(
      ['devices', 'deployments (replicas)', 'created in', 'desired delivered after last create', 'all ready after last create', 'target (delivered)'],
      [[r.devices, `${r.deployments} (${r.replicasWanted})`, s(r.createSeconds * 1000, 2), `${s(r.deliveredMs, 2)} (${r.delivered}/${r.replicasWanted})`, `${s(r.readyMs, 2)} (${r.ready}/${r.replicasWanted})`, '≤ 5 s at 10,000 devices']],
    ),
  ].join('\n');
}

function restart(e: ResultEnvelope<RestartResult>): string {
  const r = e.result;
  return [
    '### restart: control plane SIGKILLed under the fleet',
    when(e),
    '',
    table(
      ['devices', 'CP up again', 'all reconnected', 'all listed online', 'peer: first join', 'new process', 'telemetry lost', 'resends', 'target'],
      [[r.devices, s(r.controlPlaneStartMs, 2), s(r.allReconnectedMs), s(r.allOnlineMs), s(r.firstJoinMs), r.crashedAfterRestart ? 'exited' : 'stayed up', `${r.telemetry.lost} of ${r.telemetry.offered}`, r.telemetry.resends, 'all online ≤ 60 s, no crash, nothing lost']],
    ),
  ].join('\n');
}

function enroll(e: ResultEnvelope<{ runs: EnrollResult[] }>): string {
  const rows = e.result.runs.map((r) => [
    r.backend,
    r.devices,
    r.concurrency,
    s(r.seconds * 1000),
    `${fmt(r.perSecond, 0)}/s`,
    r.errors,
    `${fmt(r.latencyMs.p99, 0)} ms`,
    `${fmt(r.floor.perSecond, 0)}/s`,
    x(r.targetRatio),
  ]);
  return ['### enroll: enrollments over REST', when(e), '', table(['database', 'devices', 'in flight', 'took', 'rate', 'errors', 'p99', 'peer: /healthz rate', 'rate / target (167/s)'], rows)].join('\n');
}

function gateway(e: ResultEnvelope<GatewayResult>): string {
  const r = e.result;
  return [
    "### gateway: the gateway hop vs the agent's own endpoint (real agent, generated model)",
    when(e),
    '',
    table(
      ['model', 'direct p50 / p99', 'gateway p50 / p99', 'p50 ratio', 'p99 ratio', 'throughput ratio', 'failures (direct / gateway)', 'target'],
      [
        [
          r.model,
          `${fmt(r.direct.p50Ms)} / ${fmt(r.direct.p99Ms)} ms`,
          `${fmt(r.gateway.p50Ms)} / ${fmt(r.gateway.p99Ms)} ms`,
          x(r.ratio.p50, 3),
          x(r.ratio.p99, 3),
          x(r.ratio.throughput, 3),
          `${r.direct.failures} / ${r.gateway.failures}`,
          'p50 ≤ 1.03x (issue 12)',
        ],
      ],
    ),
  ].join('\n');
}

const RENDERERS: Record<string, (e: ResultEnvelope<never>) => string> = { fleet, liveness, placement, restart, enroll, gateway };

/** The markdown section of every suite that has a latest result, in the runner's order. */
export function renderReport(latest: ReadonlyMap<string, ResultEnvelope<unknown>>): string {
  const parts: string[] = [];
  for (const [name, render] of Object.entries(RENDERERS)) {
    const e = latest.get(name);
    if (!e) continue;
    try {
      parts.push(render(e as ResultEnvelope<never>));
    } catch (error) {
      parts.push(`### ${name}\n_result file not readable by this report: ${error instanceof Error ? error.message : String(error)}_`);
    }
  }
  return `${parts.join('\n\n')}\n`;
}
