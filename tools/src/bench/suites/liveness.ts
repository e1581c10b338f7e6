// Failure detection: K devices crash (socket destroyed, the broker publishes their will) and K others go silent
// (nothing sent, no PINGREQ: the broker must notice the keepalive lapse). Measured: time from the event until the
// device is listed offline by GET /api/v1/devices?status=offline (polled every 100 ms), against the targets
// (crash within 1 s, silence within 1.5 x keepalive + 1 s).
import { startStack, joinFleet, perWorker, timeToAllConnected, devicesWithStatus } from '../common.js';
import { distribution, fmt, ratio, sleep, type Distribution } from '../stats.js';
import type { SimFleetControl } from '../../sim/fleet-workers.js';
import type { Suite, SuiteContext, SuiteOutcome } from '../suite.js';

export interface DetectionResult {
  kind: 'crash' | 'silence';
  devices: number;
  detected: number;
  latencyMs: Distribution;
  targetMs: number;
  /** max / target */
  targetRatio: number | null;
}

async function detect(cpUrl: string, admin: string, events: { deviceId: string; at: number }[], timeoutMs: number, pollMs: number): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  const wanted = new Map(events.map((e) => [e.deviceId, e.at]));
  const end = Date.now() + timeoutMs;
  while (seen.size < wanted.size && Date.now() < end) {
    const t = Date.now();
    try {
      for (const id of await devicesWithStatus(cpUrl, admin, 'offline')) {
        const at = wanted.get(id);
        // the moment the list was asked for: the device was already offline then
        if (at !== undefined && !seen.has(id)) seen.set(id, t - at);
      }
    } catch {
      // a failed poll is retried
    }
    await sleep(pollMs);
  }
  return seen;
}

function result(kind: DetectionResult['kind'], events: { deviceId: string }[], seen: Map<string, number>, targetMs: number): DetectionResult {
  const latencyMs = distribution([...seen.values()]);
  return { kind, devices: events.length, detected: seen.size, latencyMs, targetMs, targetRatio: ratio(latencyMs.max, targetMs) };
}

async function run(ctx: SuiteContext): Promise<SuiteOutcome> {
  const n = ctx.flags.number('devices', ctx.quick ? 30 : 1000);
  const k = ctx.flags.number('events', ctx.quick ? 5 : 100);
  const keepaliveSeconds = ctx.flags.number('keepalive', 5);
  const pollMs = ctx.flags.number('poll-ms', 100);
  if (2 * k > n) throw new Error(`--events ${k}: needs at least ${2 * k} devices`);
  const connectTimeoutMs = ctx.flags.number('connect-timeout', 300) * 1000;
  const stack = await startStack('postgres');
  let fleet: SimFleetControl | undefined;
  try {
    const joined = await joinFleet(stack, n, { perWorker: perWorker(ctx.flags), behaviour: { keepaliveSeconds } });
    const f = joined.fleet;
    fleet = f;
    const joinStartedAt = joined.joinStartedAt;
    const ttc = await timeToAllConnected(f, joinStartedAt, connectTimeoutMs);
    if (ttc === null) throw new Error(`not every device connected within ${connectTimeoutMs / 1000} s (${(await f.stats()).everConnected}/${n})`);
    await sleep(ctx.quick ? 2000 : 5000);
    ctx.log(`crashing ${k} of ${n} devices`);
    const crashes = await f.crash(k);
    const crashSeen = await detect(stack.cp.url, stack.admin, crashes, 30_000, pollMs);
    ctx.log(`silencing ${k} others (keepalive ${keepaliveSeconds} s)`);
    const silences = await f.silence(k);
    const silenceSeen = await detect(stack.cp.url, stack.admin, silences, 60_000, pollMs);
    const crash = result('crash', crashes, crashSeen, 1000);
    const silence = result('silence', silences, silenceSeen, (1.5 * keepaliveSeconds + 1) * 1000);
    const summary = [crash, silence].map(
      (r) =>
        `${r.kind}: ${r.detected}/${r.devices} shown offline; max ${fmt(r.latencyMs.max, 0)} ms, p50 ${fmt(r.latencyMs.p50, 0)} ms, p99 ${fmt(r.latencyMs.p99, 0)} ms; ` +
        `target ${fmt(r.targetMs, 0)} ms: max/target ${fmt(r.targetRatio, 2)}x (REST polled every ${pollMs} ms)`,
    );
    return { options: { devices: n, events: k, keepaliveSeconds, pollMs, backend: 'postgres' }, result: { crash, silence, errorLogLines: stack.cp.errorLines.length }, summary };
  } finally {
    await fleet?.stop();
    await stack.dispose();
  }
}

export const livenessSuite: Suite = {
  name: 'liveness',
  description: 'detection latency of 100 crashes and 100 silences, vs the targets',
  flagsHelp: ['--devices N (1000)', '--connect-timeout S (300: the first join must end within it)', '--per-worker N (3000)', '--events K (100)', '--keepalive S (5)', '--poll-ms MS (100)'],
  run,
};
