import { ALERT_RULE_IDS, type AlertRuleId, type AlertSeverity } from '@flotilla/protocol';
/**
 * Alert rules as pure functions: facts read from the database go in, the conditions that should be open come out, and
 * a plan says which alert rows to open and which to resolve. No I/O here, so the rules are tested with plain data.
 *
 * Rules (defaults from PRODUCT.md §4; every threshold is configurable, see alert.settings.ts):
 * - `device-offline` (warning): the registry marks the device offline for at least `offlineAfterSeconds`; a device
 *   that has never connected (enrolled, or seeded, and not seen yet) only once enrolled for `firstConnectSeconds`
 *   (default 60): it is on its way, and a fleet enrolled at once would otherwise open (and at once resolve) one alert
 *   per device.
 * - `latency-high` (warning): a model's p95 request latency over the window exceeds `latencyMs` (3000).
 * - `queue-high` (warning): a device's average queue length over the window exceeds `queueLength` (50).
 * - `memory-high` (critical): a device's average memory use over the window exceeds `memoryPercent` (95 %) of its RAM.
 * - `accelerator-memory-high` (critical): average VRAM use exceeds `acceleratorPercent` (95 %) of its GPUs' VRAM.
 * - `error-rate-high` (critical): failed share of finished requests exceeds `errorRatePercent` (10 %), per device
 *   (its telemetry), per model and for the whole fleet (gateway requests), once at least `minRequests` finished.
 * An open alert resolves only when its value falls below `resolveRatio` x threshold (hysteresis against flapping), or
 * when its subject no longer reports anything (a device that went offline has no queue).
 */

export type { AlertRuleId, AlertSeverity };
/** The rule ids are part of the REST contract (`GET /api/v1/alerts/rules`). */
export const ALERT_RULES = ALERT_RULE_IDS;

export const RULE_SEVERITY: Record<AlertRuleId, AlertSeverity> = {
  'device-offline': 'warning',
  'latency-high': 'warning',
  'queue-high': 'warning',
  'memory-high': 'critical',
  'accelerator-memory-high': 'critical',
  'error-rate-high': 'critical',
};

export interface AlertThresholds {
  latencyMs: number;
  queueLength: number;
  memoryPercent: number;
  acceleratorPercent: number;
  errorRatePercent: number;
  /** finished requests needed before an error rate counts */
  minRequests: number;
  /** how long a device must have been offline */
  offlineAfterSeconds: number;
  /** how long a device that has never connected may take to connect after enrolling (at least offlineAfterSeconds) */
  firstConnectSeconds: number;
  /** an open alert stays open until its value is below threshold x this */
  resolveRatio: number;
}

export const DEFAULT_THRESHOLDS: AlertThresholds = {
  latencyMs: 3000,
  queueLength: 50,
  memoryPercent: 95,
  acceleratorPercent: 95,
  errorRatePercent: 10,
  minRequests: 10,
  offlineAfterSeconds: 0,
  firstConnectSeconds: 60,
  resolveRatio: 0.9,
};

export interface DeviceFacts {
  id: string;
  name: string;
  status: 'online' | 'offline' | 'draining' | 'revoked';
  /** last seen, or enrollment time for a device never seen */
  since: Date;
  /** false for a device that has never connected (no last-seen time): `since` is its enrollment */
  seen: boolean;
  memoryTotalBytes: number | null;
  vramTotalBytes: number | null;
}

/** One TelemetryRollup row inside the window. */
export interface TelemetryFacts {
  deviceId: string;
  samples: number;
  queueAvg: number;
  memoryAvgBytes: number;
  vramAvgBytes: number;
  cpuAvg: number;
  requests: number;
  failures: number;
}

/** Gateway requests over the window for one model (InferenceRequest rows). */
export interface TrafficFacts {
  model: string;
  /** finished requests, cancelled ones excluded */
  requests: number;
  /** outcome failed or timeout */
  failures: number;
  latencyP95Ms: number | null;
  /** sum of request latencies: time replicas spent serving */
  busyMs: number;
}

export interface AlertFacts {
  now: Date;
  devices: DeviceFacts[];
  telemetry: TelemetryFacts[];
  traffic: TrafficFacts[];
}

/** A condition that should have an open alert. */
export interface AlertCondition {
  rule: AlertRuleId;
  /** `device:<id>`, `model:<name>` or `fleet` */
  subject: string;
  severity: AlertSeverity;
  value: number;
  threshold: number;
  message: string;
}

export const alertKey = (rule: string, subject: string) => `${rule}|${subject}`;

/** Telemetry of one device over the window (the fields of its rows merged), averages weighted by sample count. */
export type DeviceWindow = Omit<TelemetryFacts, 'deviceId'>;

export function summarizeTelemetry(rows: readonly TelemetryFacts[]): Map<string, DeviceWindow> {
  const sums = new Map<string, DeviceWindow>();
  for (const row of rows) {
    const s = sums.get(row.deviceId) ?? { samples: 0, queueAvg: 0, memoryAvgBytes: 0, vramAvgBytes: 0, cpuAvg: 0, requests: 0, failures: 0 };
    const w = Math.max(0, row.samples);
    s.samples += w;
    s.queueAvg += row.queueAvg * w;
    s.memoryAvgBytes += row.memoryAvgBytes * w;
    s.vramAvgBytes += row.vramAvgBytes * w;
    s.cpuAvg += row.cpuAvg * w;
    s.requests += row.requests;
    s.failures += row.failures;
    sums.set(row.deviceId, s);
  }
  for (const s of sums.values()) {
    if (s.samples === 0) continue;
    s.queueAvg /= s.samples;
    s.memoryAvgBytes /= s.samples;
    s.vramAvgBytes /= s.samples;
    s.cpuAvg /= s.samples;
  }
  return sums;
}

/** The conditions that should be open now. `open` holds the keys of alerts open before, for hysteresis. */
export function evaluateAlertRules(facts: AlertFacts, thresholds: AlertThresholds, open: ReadonlySet<string> = new Set()): AlertCondition[] {
  const firing: AlertCondition[] = [];
  const check = (rule: AlertRuleId, subject: string, value: number, threshold: number, message: (v: string) => string, digits = 0) => {
    const limit = open.has(alertKey(rule, subject)) ? threshold * thresholds.resolveRatio : threshold;
    if (value > limit) {
      firing.push({ rule, subject, severity: RULE_SEVERITY[rule], value: round(value, 2), threshold, message: message(value.toFixed(digits)) });
    }
  };

  const windows = summarizeTelemetry(facts.telemetry);
  for (const device of facts.devices) {
    const subject = `device:${device.id}`;
    if (device.status === 'offline') {
      const offlineSeconds = Math.max(0, (facts.now.getTime() - device.since.getTime()) / 1000);
      const after = device.seen ? thresholds.offlineAfterSeconds : Math.max(thresholds.offlineAfterSeconds, thresholds.firstConnectSeconds);
      if (offlineSeconds >= after) {
        firing.push({
          rule: 'device-offline',
          subject,
          severity: RULE_SEVERITY['device-offline'],
          value: Math.round(offlineSeconds),
          threshold: after,
          message: device.seen
            ? `device ${device.name} is offline (last seen ${device.since.toISOString()})`
            : `device ${device.name} has not connected since it enrolled (${device.since.toISOString()})`,
        });
      }
    }
    // Only devices that are up report load; an offline device's stale telemetry raises nothing.
    if (device.status !== 'online' && device.status !== 'draining') continue;
    const w = windows.get(device.id);
    if (!w || w.samples === 0) continue;
    check('queue-high', subject, w.queueAvg, thresholds.queueLength, (v) => `device ${device.name}: average queue ${v} requests`, 1);
    if (device.memoryTotalBytes) {
      const percent = (w.memoryAvgBytes / device.memoryTotalBytes) * 100;
      check('memory-high', subject, percent, thresholds.memoryPercent, (v) => `device ${device.name}: memory ${v} % used`, 1);
    }
    if (device.vramTotalBytes) {
      const percent = (w.vramAvgBytes / device.vramTotalBytes) * 100;
      check('accelerator-memory-high', subject, percent, thresholds.acceleratorPercent, (v) => `device ${device.name}: accelerator memory ${v} % used`, 1);
    }
    if (w.requests >= thresholds.minRequests) {
      const rate = (w.failures / w.requests) * 100;
      check('error-rate-high', subject, rate, thresholds.errorRatePercent, (v) => `device ${device.name}: ${v} % of ${w.requests} requests failed`, 1);
    }
  }

  let fleetRequests = 0;
  let fleetFailures = 0;
  for (const t of facts.traffic) {
    const subject = `model:${t.model}`;
    fleetRequests += t.requests;
    fleetFailures += t.failures;
    if (t.latencyP95Ms !== null) {
      check('latency-high', subject, t.latencyP95Ms, thresholds.latencyMs, (v) => `model ${t.model}: p95 latency ${v} ms`);
    }
    if (t.requests >= thresholds.minRequests) {
      check('error-rate-high', subject, (t.failures / t.requests) * 100, thresholds.errorRatePercent, (v) => `model ${t.model}: ${v} % of ${t.requests} requests failed`, 1);
    }
  }
  if (fleetRequests >= thresholds.minRequests) {
    check('error-rate-high', 'fleet', (fleetFailures / fleetRequests) * 100, thresholds.errorRatePercent, (v) => `fleet: ${v} % of ${fleetRequests} requests failed`, 1);
  }
  return firing;
}

export interface OpenAlert {
  id: string;
  rule: string;
  subject: string;
}

export interface AlertPlan {
  open: AlertCondition[];
  resolve: OpenAlert[];
}

/**
 * What to write: open the firing conditions without an open alert, resolve open alerts of our rules that no longer
 * fire. Alerts of other rules (written by other modules) are left alone; duplicate open rows, should any exist, are
 * resolved so one remains.
 */
export function planAlertChanges(openAlerts: readonly OpenAlert[], firing: readonly AlertCondition[]): AlertPlan {
  const managed = new Set<string>(ALERT_RULES);
  const firingKeys = new Set(firing.map((c) => alertKey(c.rule, c.subject)));
  const seen = new Set<string>();
  const resolve: OpenAlert[] = [];
  for (const alert of openAlerts) {
    const key = alertKey(alert.rule, alert.subject);
    if (!managed.has(alert.rule)) continue;
    if (seen.has(key) || !firingKeys.has(key)) resolve.push(alert);
    seen.add(key);
  }
  // One pass with a set: a fleet of offline devices fires thousands of conditions (a findIndex here was quadratic).
  const open = firing.filter((c) => {
    const key = alertKey(c.rule, c.subject);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  return { open, resolve };
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
