import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onInterrupt } from './cleanup.js';
import { ControlPlaneProcess } from '../sim/control-plane.js';
import { openSimFleet, DEFAULT_DEVICES_PER_WORKER, type SimFleetControl } from '../sim/fleet-workers.js';
import type { SimBehaviour } from '../sim/sim-device.js';
import { trackChild } from './cleanup.js';
import { BENCH_ADDRESS_BASE, BENCH_DEVICES_PER_ADDRESS, enrollDevices, type EnrollmentRun } from './enrollment.js';
import type { Flags } from './suite.js';
import { createBenchDatabase, type BenchDatabase } from './postgres.js';
import { pollUntil } from './stats.js';

export type Backend = 'postgres' | 'pglite';

export interface BenchStack {
  backend: Backend;
  cp: ControlPlaneProcess;
  admin: string;
  db: BenchDatabase | undefined;
  dispose(): Promise<void>;
}

/** A built control plane on a fresh PostgreSQL database (created here, dropped by dispose) or on PGlite. */
export async function startStack(backend: Backend, env: Record<string, string> = {}, options: { keepRateLimits?: boolean } = {}): Promise<BenchStack> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-'));
  const db = backend === 'postgres' ? await createBenchDatabase() : undefined;
  // Enrollment limits (per address, per token) stop floods; a fleet suite enrolls its devices as set-up, not as the
  // figure it measures, so they are off there. The enroll suite keeps them.
  const limits: Record<string, string> = options.keepRateLimits ? {} : { FLOTILLA_RATE_LIMIT_ENROLL_PER_IP: '0', FLOTILLA_RATE_LIMIT_ENROLL_PER_TOKEN: '0' };
  const unregister = onInterrupt(() => rm(dir, { recursive: true, force: true }));
  let cp: ControlPlaneProcess | undefined;
  const dispose = async (): Promise<void> => {
    unregister();
    await cp?.stop().catch(() => undefined);
    await db?.drop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    cp = await ControlPlaneProcess.start({ dataDir: join(dir, 'cp'), ...(db ? { databaseUrl: db.url } : {}), env: { ...limits, ...env }, onChild: trackChild });
    return { backend, cp, admin: cp.adminToken, db, dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

/** Reads one Prometheus sample (`name{labels} value`) from `/metrics` text; undefined when absent. */
export function metricValue(text: string, name: string, labels?: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith('{') || rest.startsWith(' '))) continue;
    if (labels && !Object.entries(labels).every(([k, v]) => rest.includes(`${k}="${v}"`))) continue;
    const value = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}

/** The simulated devices' behaviour in every suite: the agent's keepalive, telemetry and resend timings, 50 ms loads. */
export const BENCH_BEHAVIOUR: Partial<Omit<SimBehaviour, 'hardware'>> = { keepaliveSeconds: 5, telemetryIntervalMs: 5000, resendAfterMs: 30_000, downloadMs: 0, loadMs: 50 };

/** `--per-worker N`: devices per simulator worker process (at or below it the fleet runs in the runner's process). */
export function perWorker(flags: Flags): number {
  return flags.number('per-worker', DEFAULT_DEVICES_PER_WORKER);
}

/**
 * A simulated fleet (tools/src/sim) of `devices` devices dialing `mqttUrl`: in this process or over worker processes
 * (see openSimFleet), killed with the runner on an interrupt. `plain`: against a bare broker (Mosquitto).
 */
export function openBenchFleet(options: { mqttUrl: string; controlPlaneUrl?: string; devices: number; perWorker: number; plain?: boolean; behaviour?: Partial<Omit<SimBehaviour, 'hardware'>>; credentials?: EnrollmentRun['identities'] }): Promise<SimFleetControl> {
  return openSimFleet({
    devices: options.devices,
    perWorker: options.perWorker,
    mqttUrl: options.mqttUrl,
    ...(options.controlPlaneUrl ? { controlPlaneUrl: options.controlPlaneUrl } : {}),
    namePrefix: `bench-${Date.now().toString(36)}`,
    devicesPerAddress: BENCH_DEVICES_PER_ADDRESS,
    addressBase: BENCH_ADDRESS_BASE,
    ...(options.credentials ? { credentials: options.credentials } : {}),
    behaviour: { ...BENCH_BEHAVIOUR, ...options.behaviour, mode: options.plain ? 'plain' : 'control-plane' },
    onWorker: trackChild,
  });
}

/** Enrolls `n` devices and connects them as a simulated fleet; resolves once every device was started. */
export async function joinFleet(
  stack: BenchStack,
  n: number,
  options: { perWorker: number; behaviour?: Partial<Omit<SimBehaviour, 'hardware'>> },
  beforeJoin?: () => Promise<void>,
): Promise<{ fleet: SimFleetControl; enrollment: EnrollmentRun; joinStartedAt: number }> {
  const enrollment = await enrollDevices(stack.cp.url, stack.admin, n);
  if (enrollment.errors > 0) throw new Error(`${enrollment.errors} of ${n} enrollments failed: ${JSON.stringify(enrollment.errorsByReason)}`);
  await beforeJoin?.();
  const fleet = await openBenchFleet({ mqttUrl: stack.cp.mqttUrl, controlPlaneUrl: stack.cp.url, devices: n, perWorker: options.perWorker, credentials: enrollment.identities, ...(options.behaviour ? { behaviour: options.behaviour } : {}) });
  const joinStartedAt = Date.now();
  await fleet.join(n);
  return { fleet, enrollment, joinStartedAt };
}

/** ms from `since` until every device of the fleet has connected at least once; null when the deadline passed. */
export async function timeToAllConnected(fleet: SimFleetControl, since: number, timeoutMs: number): Promise<number | null> {
  const ok = await pollUntil(async () => (await fleet.stats()).everConnected >= fleet.size, timeoutMs, 50);
  return ok ? Date.now() - since : null;
}

/** Stops new telemetry and waits until every entry is acknowledged (or the deadline passes). */
export async function drainTelemetry(fleet: SimFleetControl, timeoutMs: number): Promise<void> {
  await fleet.pauseTelemetry();
  await pollUntil(async () => {
    const s = await fleet.stats();
    return s.counters.entriesAcked >= s.counters.entriesSent && s.entriesHeld === 0;
  }, timeoutMs, 100);
}

/** Event-loop delay quantiles since the previous scrape (the control plane resets its histogram per scrape). */
export async function scrapeLoopDelay(cpUrl: string): Promise<{ p50Ms?: number; p99Ms?: number; maxMs?: number; devicesOnline?: number; brokerConnections?: number }> {
  const text = await (await fetch(`${cpUrl}/metrics`)).text();
  const s = (q: string): number | undefined => {
    const v = metricValue(text, 'flotilla_process_event_loop_delay_seconds', { quantile: q });
    return v === undefined ? undefined : v * 1000;
  };
  return {
    p50Ms: s('0.5'),
    p99Ms: s('0.99'),
    maxMs: s('1'),
    devicesOnline: metricValue(text, 'flotilla_devices', { status: 'online' }),
    brokerConnections: metricValue(text, 'flotilla_broker_connections'),
  };
}

/** Device ids listed with `status` through REST (all pages). */
export async function devicesWithStatus(cpUrl: string, admin: string, status: string): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const q = new URLSearchParams({ limit: '500', status });
    if (cursor) q.set('cursor', cursor);
    const res = await fetch(`${cpUrl}/api/v1/devices?${q.toString()}`, { headers: { authorization: `Bearer ${admin}` } });
    if (!res.ok) throw new Error(`GET /api/v1/devices: ${res.status}`);
    const page = (await res.json()) as { items: { id: string }[]; nextCursor: string | null };
    for (const d of page.items) ids.push(d.id);
    cursor = page.nextCursor;
  } while (cursor);
  return ids;
}
