import type { Recommendation } from '@flotilla/protocol';
import { summarizeTelemetry, type AlertThresholds, type DeviceFacts, type TelemetryFacts, type TrafficFacts } from '../alerts/alert-rules.js';
import type { ScalingSettings } from '../alerts/alert.settings.js';
import type { DeploymentFacts } from '../alerts/fleet-facts.js';

/**
 * Scaling recommendations over a time window, as a pure function. For each model, utilisation is the share of its
 * serving capacity that was busy: (sum of request latencies) / (window x replicas x parallel slots), from the gateway's
 * request log. Per deployment of that model:
 *
 * - scale-out (add replicas): utilisation above `scaleOutUtilizationPercent` (80 %), or the average queue on its
 *   devices above the alert queue threshold. Suggested replicas bring utilisation to the 60 % target.
 * - scale-up (bigger hardware): p95 latency above the alert latency threshold while utilisation is below the
 *   scale-out line: requests are slow, not waiting, so more replicas would not help; a device with an accelerator or
 *   more cores (or a smaller quantization) would. Also per device: average memory, accelerator memory or CPU above
 *   the alert thresholds (CPU against the accelerator threshold: on CPU-only boxes the CPU is the accelerator).
 * - scale-down (remove replicas): more than one replica, utilisation below `scaleDownUtilizationPercent` (20 %) and
 *   fewer than `scaleDownRequestsPerSecond` (1) requests per second. Never below one replica.
 */
export type { Recommendation };
export type RecommendationKind = Recommendation['kind'];

export interface RecommendationFacts {
  windowSeconds: number;
  deployments: DeploymentFacts[];
  traffic: TrafficFacts[];
  devices: DeviceFacts[];
  telemetry: TelemetryFacts[];
}

export function recommendScaling(facts: RecommendationFacts, settings: ScalingSettings, thresholds: AlertThresholds): Recommendation[] {
  const out: Recommendation[] = [];
  const windowMs = facts.windowSeconds * 1000;
  const windows = summarizeTelemetry(facts.telemetry);
  const trafficByModel = new Map(facts.traffic.map((t) => [t.model, t]));
  // Several deployments may serve one model: its traffic is shared by all their slots.
  const slotsByModel = new Map<string, number>();
  for (const d of facts.deployments) slotsByModel.set(d.model, (slotsByModel.get(d.model) ?? 0) + Math.max(1, d.replicas) * Math.max(1, d.parallel));

  for (const d of facts.deployments) {
    if (d.replicas <= 0) continue;
    const traffic = trafficByModel.get(d.model);
    const slots = slotsByModel.get(d.model) ?? 1;
    const busyMs = traffic?.busyMs ?? 0;
    const utilization = (busyMs / (windowMs * slots)) * 100;
    const requestsPerSecond = (traffic?.requests ?? 0) / facts.windowSeconds;
    const queues = d.placedDeviceIds.map((id) => windows.get(id)?.queueAvg).filter((q): q is number => q !== undefined);
    const queueAvg = queues.length ? queues.reduce((a, b) => a + b, 0) / queues.length : 0;
    const p95 = traffic?.latencyP95Ms ?? null;
    const metrics: Record<string, number> = {
      utilizationPercent: round(utilization),
      requestsPerSecond: round(requestsPerSecond),
      queueAvg: round(queueAvg),
      ...(p95 !== null ? { latencyP95Ms: round(p95) } : {}),
      readyReplicas: d.ready,
    };
    const base = { subject: `deployment:${d.name}`, deploymentId: d.id, currentReplicas: d.replicas, metrics };
    if (utilization > settings.scaleOutUtilizationPercent || queueAvg > thresholds.queueLength) {
      const needed = Math.ceil((d.replicas * utilization) / settings.targetUtilizationPercent);
      out.push({
        ...base,
        kind: 'scale-out',
        suggestedReplicas: Math.max(d.replicas + 1, needed),
        reason:
          utilization > settings.scaleOutUtilizationPercent
            ? `${d.model} was ${utilization.toFixed(0)} % busy over ${facts.windowSeconds} s: add replicas`
            : `requests queue on its devices (average ${queueAvg.toFixed(1)}): add replicas`,
      });
    } else if (p95 !== null && p95 > thresholds.latencyMs) {
      out.push({
        ...base,
        kind: 'scale-up',
        reason: `${d.model} answers slowly (p95 ${p95.toFixed(0)} ms) while only ${utilization.toFixed(0)} % busy: more replicas will not help; use devices with an accelerator or more cores, or a smaller model`,
      });
    } else if (
      d.replicas > 1 &&
      utilization < settings.scaleDownUtilizationPercent &&
      requestsPerSecond < settings.scaleDownRequestsPerSecond
    ) {
      const needed = Math.max(1, Math.ceil((d.replicas * utilization) / settings.targetUtilizationPercent));
      out.push({
        ...base,
        kind: 'scale-down',
        suggestedReplicas: Math.min(d.replicas - 1, needed),
        reason: `${d.model} was ${utilization.toFixed(0)} % busy at ${requestsPerSecond.toFixed(2)} req/s over ${facts.windowSeconds} s: fewer replicas suffice`,
      });
    }
  }

  for (const device of facts.devices) {
    if (device.status !== 'online' && device.status !== 'draining') continue;
    const w = windows.get(device.id);
    if (!w || w.samples === 0) continue;
    const pressure: string[] = [];
    const metrics: Record<string, number> = { cpuPercent: round(w.cpuAvg) };
    if (device.memoryTotalBytes) {
      const m = (w.memoryAvgBytes / device.memoryTotalBytes) * 100;
      metrics.memoryPercent = round(m);
      if (m > thresholds.memoryPercent) pressure.push(`memory ${m.toFixed(0)} %`);
    }
    if (device.vramTotalBytes) {
      const v = (w.vramAvgBytes / device.vramTotalBytes) * 100;
      metrics.acceleratorMemoryPercent = round(v);
      if (v > thresholds.acceleratorPercent) pressure.push(`accelerator memory ${v.toFixed(0)} %`);
    }
    if (w.cpuAvg > thresholds.acceleratorPercent) pressure.push(`CPU ${w.cpuAvg.toFixed(0)} %`);
    if (pressure.length) {
      out.push({
        kind: 'scale-up',
        subject: `device:${device.id}`,
        deviceId: device.id,
        reason: `device ${device.name} is saturated (${pressure.join(', ')}): give it more resources or move a model elsewhere`,
        metrics,
      });
    }
  }
  return out;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
