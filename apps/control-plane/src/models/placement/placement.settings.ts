import { z } from 'zod';
import type { PlannerOptions } from './planner.js';

export const SCHEDULER_SETTINGS = Symbol('flotilla.scheduler-settings');

export interface SchedulerSettings {
  /** fleet events within this window start one planning run (FLOTILLA_SCHEDULER_DEBOUNCE_MS, default 200) */
  debounceMs: number;
  /** a steady stream of events is planned at least this often (FLOTILLA_SCHEDULER_MAX_DELAY_MS, default 1000) */
  maxDelayMs: number;
  /** a check this often, events or not; it plans only when something changed (FLOTILLA_SCHEDULER_INTERVAL_S, default 5) */
  intervalMs: number;
  /** the fleet index is read whole from the database this often, for rows changed without an event (FLOTILLA_SCHEDULER_RESYNC_S, default 300) */
  resyncMs: number;
  /** a device that failed to fetch or load a model is not given it again for this long (FLOTILLA_SCHEDULER_FAILURE_BACKOFF_S, default 600) */
  failureBackoffMs: number;
  /** memory kept free on every device: a share of its budget and a floor (FLOTILLA_SCHEDULER_MEMORY_HEADROOM, _MIB; 0.1 and 256) */
  planner: PlannerOptions;
}

/** `FLOTILLA_SCHEDULER_*`: a section of the control plane's config (composed by loadConfig). */
export const schedulerEnvSchema = z.object({
  FLOTILLA_SCHEDULER_DEBOUNCE_MS: z.coerce.number().int().min(0).max(10_000).default(200),
  FLOTILLA_SCHEDULER_MAX_DELAY_MS: z.coerce.number().int().min(0).max(60_000).default(1000),
  FLOTILLA_SCHEDULER_INTERVAL_S: z.coerce.number().min(0.1).max(3600).default(5),
  FLOTILLA_SCHEDULER_RESYNC_S: z.coerce.number().min(1).max(86_400).default(300),
  FLOTILLA_SCHEDULER_FAILURE_BACKOFF_S: z.coerce.number().min(0).max(86_400).default(600),
  FLOTILLA_SCHEDULER_MEMORY_HEADROOM: z.coerce.number().min(0).max(0.9).default(0.1),
  FLOTILLA_SCHEDULER_MEMORY_HEADROOM_MIB: z.coerce.number().min(0).max(1_048_576).default(256),
  FLOTILLA_SCHEDULER_DISK_HEADROOM_MIB: z.coerce.number().min(0).max(1_048_576).default(512),
});

export function schedulerSettingsFromEnv(s: z.infer<typeof schedulerEnvSchema>): SchedulerSettings {
  return {
    debounceMs: s.FLOTILLA_SCHEDULER_DEBOUNCE_MS,
    maxDelayMs: Math.max(s.FLOTILLA_SCHEDULER_MAX_DELAY_MS, s.FLOTILLA_SCHEDULER_DEBOUNCE_MS),
    intervalMs: Math.round(s.FLOTILLA_SCHEDULER_INTERVAL_S * 1000),
    resyncMs: Math.round(s.FLOTILLA_SCHEDULER_RESYNC_S * 1000),
    failureBackoffMs: Math.round(s.FLOTILLA_SCHEDULER_FAILURE_BACKOFF_S * 1000),
    planner: {
      memoryHeadroomFraction: s.FLOTILLA_SCHEDULER_MEMORY_HEADROOM,
      memoryHeadroomBytes: s.FLOTILLA_SCHEDULER_MEMORY_HEADROOM_MIB * 1024 * 1024,
      diskHeadroomBytes: s.FLOTILLA_SCHEDULER_DISK_HEADROOM_MIB * 1024 * 1024,
    },
  };
}
