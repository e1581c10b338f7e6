import { z } from 'zod';
import { blankAsUnset } from '../../platform/env-helpers.js';
import { DEFAULT_THRESHOLDS, type AlertThresholds } from './alert-rules.js';

export const ALERT_SETTINGS = Symbol('flotilla.alert-settings');

export interface AlertSettings {
  thresholds: AlertThresholds;
  /** the alert rules look this far back (FLOTILLA_ALERT_WINDOW_S, default 300) */
  windowSeconds: number;
  /** evaluation period (FLOTILLA_ALERT_EVALUATE_EVERY_S, default 15; 0 = only on demand and on device status changes) */
  evaluateEverySeconds: number;
  scaling: ScalingSettings;
  /** fleet health is unhealthy when at least this share of (non-revoked) devices is offline (default 50) */
  unhealthyOfflinePercent: number;
}

/** Scaling recommendations (PRODUCT.md §4: scale down under 20 % utilisation and 1 req/s). */
export interface ScalingSettings {
  /** FLOTILLA_SCALE_WINDOW_S, default 900 */
  windowSeconds: number;
  /** FLOTILLA_SCALE_DOWN_UTILIZATION_PERCENT, default 20 */
  scaleDownUtilizationPercent: number;
  /** FLOTILLA_SCALE_DOWN_REQUESTS_PER_S, default 1 */
  scaleDownRequestsPerSecond: number;
  /** FLOTILLA_SCALE_OUT_UTILIZATION_PERCENT, default 80 */
  scaleOutUtilizationPercent: number;
  /** utilisation a recommended replica count aims at (60 %) */
  targetUtilizationPercent: number;
}

// Blank variables mean "default", as elsewhere in the config.
const num = (fallback: number, min: number, max: number) => blankAsUnset(z.coerce.number().min(min).max(max).default(fallback));

/** Variable -> threshold; values are plain numbers (ms, %, requests, seconds). A section of the control plane's config. */
export const alertEnvSchema = z.object({
  FLOTILLA_ALERT_LATENCY_MS: num(DEFAULT_THRESHOLDS.latencyMs, 1, 3_600_000),
  FLOTILLA_ALERT_QUEUE_LENGTH: num(DEFAULT_THRESHOLDS.queueLength, 0, 1_000_000),
  FLOTILLA_ALERT_MEMORY_PERCENT: num(DEFAULT_THRESHOLDS.memoryPercent, 1, 100),
  FLOTILLA_ALERT_ACCELERATOR_PERCENT: num(DEFAULT_THRESHOLDS.acceleratorPercent, 1, 100),
  FLOTILLA_ALERT_ERROR_RATE_PERCENT: num(DEFAULT_THRESHOLDS.errorRatePercent, 0, 100),
  FLOTILLA_ALERT_MIN_REQUESTS: num(DEFAULT_THRESHOLDS.minRequests, 1, 1_000_000),
  FLOTILLA_ALERT_OFFLINE_AFTER_S: num(DEFAULT_THRESHOLDS.offlineAfterSeconds, 0, 30 * 24 * 3600),
  FLOTILLA_ALERT_FIRST_CONNECT_S: num(DEFAULT_THRESHOLDS.firstConnectSeconds, 0, 30 * 24 * 3600),
  FLOTILLA_ALERT_RESOLVE_RATIO: num(DEFAULT_THRESHOLDS.resolveRatio, 0.5, 1),
  FLOTILLA_ALERT_WINDOW_S: num(300, 60, 7 * 24 * 3600),
  FLOTILLA_ALERT_EVALUATE_EVERY_S: num(15, 0, 3600),
  FLOTILLA_FLEET_UNHEALTHY_OFFLINE_PERCENT: num(50, 1, 100),
  FLOTILLA_SCALE_WINDOW_S: num(900, 60, 7 * 24 * 3600),
  FLOTILLA_SCALE_DOWN_UTILIZATION_PERCENT: num(20, 0, 100),
  FLOTILLA_SCALE_DOWN_REQUESTS_PER_S: num(1, 0, 1_000_000),
  FLOTILLA_SCALE_OUT_UTILIZATION_PERCENT: num(80, 1, 100),
});

export function alertSettingsFromEnv(e: z.infer<typeof alertEnvSchema>): AlertSettings {
  return {
    thresholds: {
      latencyMs: e.FLOTILLA_ALERT_LATENCY_MS,
      queueLength: e.FLOTILLA_ALERT_QUEUE_LENGTH,
      memoryPercent: e.FLOTILLA_ALERT_MEMORY_PERCENT,
      acceleratorPercent: e.FLOTILLA_ALERT_ACCELERATOR_PERCENT,
      errorRatePercent: e.FLOTILLA_ALERT_ERROR_RATE_PERCENT,
      minRequests: e.FLOTILLA_ALERT_MIN_REQUESTS,
      offlineAfterSeconds: e.FLOTILLA_ALERT_OFFLINE_AFTER_S,
      firstConnectSeconds: e.FLOTILLA_ALERT_FIRST_CONNECT_S,
      resolveRatio: e.FLOTILLA_ALERT_RESOLVE_RATIO,
    },
    windowSeconds: e.FLOTILLA_ALERT_WINDOW_S,
    evaluateEverySeconds: e.FLOTILLA_ALERT_EVALUATE_EVERY_S,
    unhealthyOfflinePercent: e.FLOTILLA_FLEET_UNHEALTHY_OFFLINE_PERCENT,
    scaling: {
      windowSeconds: e.FLOTILLA_SCALE_WINDOW_S,
      scaleDownUtilizationPercent: e.FLOTILLA_SCALE_DOWN_UTILIZATION_PERCENT,
      scaleDownRequestsPerSecond: e.FLOTILLA_SCALE_DOWN_REQUESTS_PER_S,
      scaleOutUtilizationPercent: e.FLOTILLA_SCALE_OUT_UTILIZATION_PERCENT,
      targetUtilizationPercent: 60,
    },
  };
}
