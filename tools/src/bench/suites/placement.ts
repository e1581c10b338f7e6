// Placement at scale: D deployments (one catalog model each, R replicas) created one after another over N simulated
// devices. Measured from the last create: every placed replica's desired state delivered (the simulated device
// records when a model first appears in its desired state) and every replica ready (the devices answer
// downloading -> ready after a simulated load time), as the deployments API reports it.
import { randomBytes } from 'node:crypto';
import { startStack, joinFleet, perWorker, timeToAllConnected } from '../common.js';
import { api } from '../http.js';
import { fmt, sleep } from '../stats.js';
import type { SimFleetControl } from '../../sim/fleet-workers.js';
import type { Suite, SuiteContext, SuiteOutcome } from '../suite.js';

interface DeploymentRow {
  name: string;
  model: string;
  replicas: number;
  status: { wanted: number; placed: number; ready: number; deviceIds: string[] } | null;
}

export interface PlacementResult {
  devices: number;
  deployments: number;
  replicasWanted: number;
  createSeconds: number;
  /** ms from the last create until every wanted replica was placed and its desired state delivered; null if not by the deadline */
  deliveredMs: number | null;
  /** ms from the last create until the deployments API reported every replica ready */
  readyMs: number | null;
  placed: number;
  delivered: number;
  ready: number;
  targetDeliveredMs: number;
}

async function listDeployments(url: string, admin: string): Promise<DeploymentRow[]> {
  const rows: DeploymentRow[] = [];
  let cursor: string | null = null;
  do {
    const page = (await api(url, 'GET', `/api/v1/deployments?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, admin)) as { items: DeploymentRow[]; nextCursor: string | null };
    rows.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return rows;
}

async function run(ctx: SuiteContext): Promise<SuiteOutcome> {
  const n = ctx.flags.number('devices', ctx.quick ? 20 : 1000);
  const d = ctx.flags.number('deployments', ctx.quick ? 5 : 100);
  const r = ctx.flags.number('replicas', ctx.quick ? 2 : 3);
  const timeoutMs = ctx.flags.number('timeout', 180) * 1000;
  const connectTimeoutMs = ctx.flags.number('connect-timeout', 300) * 1000;
  const stack = await startStack('postgres');
  let fleet: SimFleetControl | undefined;
  try {
    const joined = await joinFleet(stack, n, { perWorker: perWorker(ctx.flags) });
    const f = joined.fleet;
    fleet = f;
    const joinStartedAt = joined.joinStartedAt;
    if ((await timeToAllConnected(f, joinStartedAt, connectTimeoutMs)) === null) throw new Error(`not every device connected within ${connectTimeoutMs / 1000} s`);
    await sleep(ctx.quick ? 2000 : 5000);
    const runId = Date.now().toString(36);
    for (let i = 0; i < d; i++) {
      await api(stack.cp.url, 'POST', '/api/v1/models', stack.admin, {
        name: `bench-${runId}-m${i}`,
        sourceUrl: `file:///nonexistent/bench-${i}.gguf`,
        sha256: randomBytes(32).toString('hex'),
        sizeBytes: 1_000_000,
        quantization: 'Q8_0',
        memoryBytes: 50_000_000,
        contextLength: 2048,
        tier: 'small',
      });
    }
    ctx.log(`creating ${d} deployments x ${r} replicas over ${n} devices`);
    const t0 = performance.now();
    for (let i = 0; i < d; i++) {
      await api(stack.cp.url, 'POST', '/api/v1/deployments', stack.admin, { name: `bench-${runId}-d${i}`, model: `bench-${runId}-m${i}`, replicas: r });
    }
    const lastCreate = Date.now();
    const createSeconds = (performance.now() - t0) / 1000;
    const wanted = d * r;
    let deliveredMs: number | null = null;
    let readyMs: number | null = null;
    let placed = 0;
    let delivered = 0;
    let ready = 0;
    const end = lastCreate + timeoutMs;
    while (Date.now() < end && (deliveredMs === null || readyMs === null)) {
      const rows = (await listDeployments(stack.cp.url, stack.admin)).filter((x) => x.name.startsWith(`bench-${runId}-`));
      placed = rows.reduce((s, x) => s + (x.status?.placed ?? 0), 0);
      ready = rows.reduce((s, x) => s + (x.status?.ready ?? 0), 0);
      const arrivals = new Map((await f.arrivals()).map((a) => [a.deviceId, a.models]));
      let latest = 0;
      delivered = 0;
      for (const row of rows) {
        for (const id of row.status?.deviceIds ?? []) {
          const at = arrivals.get(id)?.[row.model];
          if (at !== undefined) {
            delivered++;
            latest = Math.max(latest, at);
          }
        }
      }
      if (deliveredMs === null && placed >= wanted && delivered >= wanted) deliveredMs = latest - lastCreate;
      if (readyMs === null && ready >= wanted) readyMs = Date.now() - lastCreate;
      await sleep(200);
    }
    const result: PlacementResult = { devices: n, deployments: d, replicasWanted: wanted, createSeconds, deliveredMs, readyMs, placed, delivered, ready, targetDeliveredMs: 5000 };
    const summary = [
      `${d} deployments (${wanted} replicas) over ${n} devices, created in ${fmt(createSeconds)} s: ` +
        `desired states delivered ${deliveredMs === null ? `NOT within ${timeoutMs / 1000} s (${delivered}/${wanted}, ${placed} placed)` : `${fmt(deliveredMs / 1000, 2)} s`} after the last create (target 5 s: ${fmt(deliveredMs === null ? null : deliveredMs / 5000, 2)}x); ` +
        `all ready ${readyMs === null ? `NOT within ${timeoutMs / 1000} s (${ready}/${wanted})` : `${fmt(readyMs / 1000, 2)} s`} (simulated load 50 ms)`,
    ];
    return { options: { devices: n, deployments: d, replicas: r, timeoutMs, backend: 'postgres' }, result: { ...result, errorLogLines: stack.cp.errorLines.length }, summary };
  } finally {
    await fleet?.stop();
    await stack.dispose();
  }
}

export const placementSuite: Suite = {
  name: 'placement',
  description: 'D deployments over N devices: desired states delivered and replicas ready after the last create',
  flagsHelp: ['--devices N (1000)', '--connect-timeout S (300: the first join must end within it)', '--per-worker N (3000)', '--deployments D (100)', '--replicas R (3)', '--timeout S (180)'],
  run,
};
