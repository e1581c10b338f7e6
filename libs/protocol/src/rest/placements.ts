import { z } from 'zod';
import { DeviceIdSchema, ModelNameSchema } from '../schemas/common.js';
import type { ModelStateName } from '../schemas/model-state.js';
import { DeploymentPlanSchema } from './deployments.js';
import { IsoDateTimeSchema, PageQuerySchema, pageOf } from './page.js';

/** `GET /api/v1/placements` query: filter by device and/or deployment. */
export const PlacementListQuerySchema = PageQuerySchema.extend({
  deviceId: DeviceIdSchema.optional(),
  deploymentId: z.string().min(1).max(128).optional(),
});

const MODEL_STATE_NAMES = ['pending', 'downloading', 'verifying', 'loading', 'ready', 'unloading', 'failed'] as const satisfies readonly ModelStateName[];

/** A placement: one model a device should hold, with what the device last reported about it. */
export const PlacementSchema = z.strictObject({
  id: z.string().min(1),
  deviceId: z.string().min(1),
  deviceName: z.string(),
  deviceStatus: z
    .enum(['online', 'offline', 'draining', 'revoked', 'reconnecting'])
    .describe('the stored status, or `reconnecting` while the device has not come back since the control plane started'),
  model: ModelNameSchema,
  modelId: z.string().min(1),
  deploymentId: z.string().nullable(),
  /** the deployment's name; null for a placement made by hand */
  deployment: z.string().nullable(),
  /** the device's desired-state version when this placement last changed */
  desiredVersion: z.int().min(0),
  loaded: z.boolean(),
  pinned: z.boolean(),
  contextSize: z.int().nullable(),
  parallel: z.int().min(1),
  /** the model's state as the device last reported it; null before any report */
  state: z.enum(MODEL_STATE_NAMES).nullable(),
  ready: z.boolean().describe("reported ready and in memory with the catalog's file, on a device that is not reconnecting"),
  updatedAt: IsoDateTimeSchema,
});
export type PlacementView = z.infer<typeof PlacementSchema>;

/** `GET /api/v1/placements` answer. */
export const PlacementPageSchema = pageOf(PlacementSchema);

/** What one scheduler run did. */
export const ScheduleRunSchema = z.strictObject({
  at: IsoDateTimeSchema,
  durationMs: z.number().min(0),
  added: z.int().min(0),
  removed: z.int().min(0),
  updated: z.int().min(0),
  /** devices that got a new desired-state version */
  publishedDeviceIds: z.array(z.string()),
  deployments: z.array(DeploymentPlanSchema),
});
export type ScheduleRunView = z.infer<typeof ScheduleRunSchema>;

/** What the scheduler has done since this control plane started: how often it planned, loaded and republished. */
export const SchedulerCountersSchema = z.strictObject({
  runs: z.int().min(0).describe('planning runs (a periodic tick with nothing changed is not a run)'),
  indexLoads: z.int().min(0).describe('full loads of the fleet (every device, placement and model state) from the database'),
  republishPasses: z.int().min(0).describe("passes that published devices' current desired states again after they came online"),
  republished: z.int().min(0).describe('desired states published again, same version'),
});
export type SchedulerCounters = z.infer<typeof SchedulerCountersSchema>;

/** `GET /api/v1/scheduler` and `POST /api/v1/scheduler/run` answer: the last run, null before the first. */
export const SchedulerStatusSchema = z.strictObject({ lastRun: ScheduleRunSchema.nullable(), counters: SchedulerCountersSchema });
export type SchedulerStatus = z.infer<typeof SchedulerStatusSchema>;
