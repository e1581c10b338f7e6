import { describe, expect, it } from 'vitest';
import { DEFAULT_THRESHOLDS, type DeviceFacts, type TelemetryFacts, type TrafficFacts } from '../alerts/alert-rules.js';
import type { ScalingSettings } from '../alerts/alert.settings.js';
import type { DeploymentFacts } from '../alerts/fleet-facts.js';
import { recommendScaling, type RecommendationFacts } from './recommendations.js';

const settings: ScalingSettings = {
  windowSeconds: 900,
  scaleDownUtilizationPercent: 20,
  scaleDownRequestsPerSecond: 1,
  scaleOutUtilizationPercent: 80,
  targetUtilizationPercent: 60,
};
const WINDOW_S = 900;
const WINDOW_MS = WINDOW_S * 1000;

function deployment(name: string, replicas: number, overrides: Partial<DeploymentFacts> = {}): DeploymentFacts {
  return { id: `id-${name}`, name, model: `${name}-model`, replicas, parallel: 1, placedDeviceIds: [], ready: replicas, ...overrides };
}
function traffic(model: string, requests: number, busyFraction: number, slots: number, p95: number | null = 200): TrafficFacts {
  return { model, requests, failures: 0, latencyP95Ms: p95, busyMs: busyFraction * WINDOW_MS * slots };
}
function facts(overrides: Partial<RecommendationFacts>): RecommendationFacts {
  return { windowSeconds: WINDOW_S, deployments: [], traffic: [], devices: [], telemetry: [], ...overrides };
}
const recommend = (f: RecommendationFacts) => recommendScaling(f, settings, DEFAULT_THRESHOLDS);

describe('scaling recommendations', () => {
  it('recommends scaling out a busy deployment to reach the target utilisation', () => {
    // 4 replicas 90 % busy: 3.6 replicas of work, 6 replicas at 60 %.
    const [r, ...rest] = recommend(facts({ deployments: [deployment('chat', 4)], traffic: [traffic('chat-model', 5000, 0.9, 4)] }));
    expect(rest).toEqual([]);
    expect(r).toMatchObject({ kind: 'scale-out', subject: 'deployment:chat', currentReplicas: 4, suggestedReplicas: 6 });
    expect(r?.metrics.utilizationPercent).toBe(90);
  });

  it('recommends scaling out when requests queue on the deployment devices', () => {
    const telemetry: TelemetryFacts[] = [{ deviceId: 'd1', samples: 10, queueAvg: 70, memoryAvgBytes: 0, vramAvgBytes: 0, cpuAvg: 50, requests: 0, failures: 0 }];
    const [r] = recommend(facts({ deployments: [deployment('chat', 1, { placedDeviceIds: ['d1'] })], traffic: [traffic('chat-model', 100, 0.5, 1)], telemetry }));
    expect(r).toMatchObject({ kind: 'scale-out', suggestedReplicas: 2 });
    expect(r?.reason).toMatch(/queue/);
  });

  it('recommends scaling up when requests are slow but replicas are not busy', () => {
    const [r] = recommend(facts({ deployments: [deployment('big', 2)], traffic: [traffic('big-model', 100, 0.3, 2, 4500)] }));
    expect(r).toMatchObject({ kind: 'scale-up', subject: 'deployment:big' });
    expect(r?.suggestedReplicas).toBeUndefined();
  });

  it('recommends scaling down under 20 % utilisation and 1 req/s, never below one replica', () => {
    const quiet = traffic('chat-model', 450, 0.05, 3); // 0.5 req/s, 5 % busy
    const [r] = recommend(facts({ deployments: [deployment('chat', 3)], traffic: [quiet] }));
    expect(r).toMatchObject({ kind: 'scale-down', currentReplicas: 3, suggestedReplicas: 1 });
    expect(recommend(facts({ deployments: [deployment('chat', 1)], traffic: [traffic('chat-model', 0, 0, 1)] }))).toEqual([]);
    // Busy enough in requests per second: keep.
    expect(recommend(facts({ deployments: [deployment('chat', 3)], traffic: [traffic('chat-model', 1800, 0.05, 3)] }))).toEqual([]);
    // Between the lines: nothing to do.
    expect(recommend(facts({ deployments: [deployment('chat', 3)], traffic: [traffic('chat-model', 450, 0.5, 3)] }))).toEqual([]);
  });

  it('recommends scaling up a saturated device', () => {
    const devices: DeviceFacts[] = [
      { id: 'd1', name: 'kiosk', status: 'online', since: new Date(), seen: true, memoryTotalBytes: 1000, vramTotalBytes: null },
      { id: 'd2', name: 'idle', status: 'online', since: new Date(), seen: true, memoryTotalBytes: 1000, vramTotalBytes: null },
    ];
    const telemetry: TelemetryFacts[] = [
      { deviceId: 'd1', samples: 10, queueAvg: 0, memoryAvgBytes: 980, vramAvgBytes: 0, cpuAvg: 97, requests: 0, failures: 0 },
      { deviceId: 'd2', samples: 10, queueAvg: 0, memoryAvgBytes: 300, vramAvgBytes: 0, cpuAvg: 10, requests: 0, failures: 0 },
    ];
    const out = recommend(facts({ devices, telemetry }));
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: 'scale-up', subject: 'device:d1', metrics: { memoryPercent: 98, cpuPercent: 97 } });
  });

  it('shares a model traffic among the deployments serving it', () => {
    const deployments = [deployment('a', 2, { model: 'm' }), deployment('b', 2, { model: 'm' })];
    // 2.4 slots of work over 4 slots: 60 % each, no change.
    expect(recommend(facts({ deployments, traffic: [traffic('m', 5000, 0.6, 4)] }))).toEqual([]);
  });
});
