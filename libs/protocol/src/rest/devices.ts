import { z } from 'zod';
import { DetailsSchema, DEVICE_ID_PATTERN, DeviceIdSchema } from '../schemas/common.js';
import { DeviceEventSchema } from '../schemas/events.js';
import { HardwareSchema, ModelOnDiskSchema, RuntimeInfoSchema } from '../schemas/hello.js';
import type { ModelStateName } from '../schemas/model-state.js';
import { TelemetrySchema } from '../schemas/telemetry.js';
import { DeviceLabelsSchema } from './identity.js';

/**
 * REST contract of `/api/v1/devices/*`: queries and bodies as the control plane parses them, responses as they travel
 * (instants as ISO 8601 strings).
 */

/** An instant in a response: ISO 8601 in UTC, as `Date.toISOString()` writes it. */
const Instant = z.iso.datetime();

/** Statuses a device is stored with. */
export const DEVICE_STATUSES = ['online', 'offline', 'draining', 'revoked'] as const;
export const DeviceStatusSchema = z.enum(DEVICE_STATUSES);

/**
 * The status the views show: the stored one, or `reconnecting` for a device stored as online/draining before this
 * control plane started that has not come back yet (no hello, no live session).
 */
export const PRESENCE_STATUSES = ['online', 'reconnecting', 'offline', 'draining', 'revoked'] as const;
export const PresenceStatusSchema = z
  .enum(PRESENCE_STATUSES)
  .describe('the stored status, or `reconnecting`: stored as online/draining before this control plane started and not back yet (no hello, no live session)');
export type PresenceStatus = z.infer<typeof PresenceStatusSchema>;

/** `{ id }` of `/devices/:id`: a device id [P-2.1] (anything else cannot exist, so it is a 404). */
export const DeviceIdParamsSchema = z.object({ id: z.string().regex(DEVICE_ID_PATTERN).describe('device id') });

/**
 * The hardware the device last reported: its hello's inventory with the runtimes and the verified model files on disk
 * [P-3.1], or the summary it sent at enrollment. Null until it reported any.
 */
export const DeviceHardwareSchema = HardwareSchema.extend({
  runtimes: z.array(RuntimeInfoSchema).optional(),
  modelsOnDisk: z.array(ModelOnDiskSchema).optional(),
});
export type DeviceHardware = z.infer<typeof DeviceHardwareSchema>;

// --- list ----------------------------------------------------------------------------------------------------------

/** `GET /api/v1/devices` query. */
export const DeviceListQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional().describe('nextCursor of the previous page'),
  status: z.enum(PRESENCE_STATUSES).optional().describe('`online`/`draining` leave reconnecting devices out; `reconnecting` lists only them'),
});
export type DeviceListQuery = z.input<typeof DeviceListQuerySchema>;

/** One row of the device list. */
export const DeviceListItemSchema = z.object({
  id: DeviceIdSchema,
  name: z.string(),
  labels: z.record(z.string(), z.string()),
  hardware: DeviceHardwareSchema.nullable(),
  agentVersion: z.string().nullable(),
  status: PresenceStatusSchema,
  lastSeenAt: Instant.nullable(),
  createdAt: Instant,
});
export type DeviceListItem = z.infer<typeof DeviceListItemSchema>;

/** `GET /api/v1/devices`: a page by id. */
export const DevicePageSchema = z.object({ items: z.array(DeviceListItemSchema), nextCursor: z.string().nullable() });
export type DevicePage = z.infer<typeof DevicePageSchema>;

// --- detail --------------------------------------------------------------------------------------------------------

export const MODEL_STATE_NAMES = ['pending', 'downloading', 'verifying', 'loading', 'ready', 'unloading', 'failed'] as const satisfies readonly ModelStateName[];

/** One model's state on a device, as last reported [P-3.5]. */
export const DeviceModelStateSchema = z.object({
  model: z.string(),
  sha256: z.string().nullable(),
  state: z.enum(MODEL_STATE_NAMES),
  /** in memory and serving */
  loaded: z.boolean(),
  /** 0..1 while downloading */
  progress: z.number().min(0).max(1).nullable(),
  receivedBytes: z.int().min(0).nullable(),
  totalBytes: z.int().min(0).nullable(),
  errorCode: z.string().nullable(),
  errorMessage: z.string().nullable(),
  /** the desired-state version this state works toward */
  desiredVersion: z.int().min(0),
  /** when the state last changed */
  since: Instant,
});
export type DeviceModelState = z.infer<typeof DeviceModelStateSchema>;

/** One telemetry rollup bucket of a device. */
export const TelemetryPointSchema = z.object({
  bucketStart: Instant,
  bucketSeconds: z.int().min(1),
  samples: z.int().min(0),
  cpuAvg: z.number(),
  cpuMax: z.number(),
  memoryAvgBytes: z.number(),
  memoryMaxBytes: z.number(),
  vramAvgBytes: z.number(),
  vramMaxBytes: z.number(),
  tokensPerSecondAvg: z.number(),
  tokensPerSecondMax: z.number(),
  queueAvg: z.number(),
  queueMax: z.number(),
  requests: z.int().min(0),
  failures: z.int().min(0),
});
export type TelemetryPoint = z.infer<typeof TelemetryPointSchema>;

/** `GET /api/v1/devices/:id` (and the answer of `PATCH`): hardware, status, model states, latest telemetry. */
export const DeviceDetailSchema = DeviceListItemSchema.extend({
  connected: z.boolean().describe('a live MQTT session right now'),
  updatedAt: Instant,
  desiredVersion: z.int().min(0),
  reportedDesiredVersion: z.int().min(0),
  modelStates: z.array(DeviceModelStateSchema),
  lastTelemetry: TelemetrySchema.extend({ receivedAt: Instant })
    .nullable()
    .describe('the newest sample received since this control plane started'),
  lastRollup: TelemetryPointSchema.nullable().describe('the newest minute bucket (survives restarts)'),
});
export type DeviceDetail = z.infer<typeof DeviceDetailSchema>;

/** `PATCH /api/v1/devices/:id` body: rename and relabel (labels replace the whole map). */
export const UpdateDeviceRequestSchema = z
  .strictObject({
    name: z.string().trim().min(1).max(128).optional(),
    labels: DeviceLabelsSchema.optional(),
  })
  .refine((b) => b.name !== undefined || b.labels !== undefined, 'nothing to change: give name and/or labels');
export type UpdateDeviceRequest = z.input<typeof UpdateDeviceRequestSchema>;

/** `POST /api/v1/devices/:id/revoke` answer (idempotent: a second call answers the same `revokedAt`). */
export const RevokeDeviceResponseSchema = z.object({
  id: DeviceIdSchema,
  status: z.literal('revoked'),
  revokedAt: Instant,
  /** a live session was cut */
  disconnected: z.boolean(),
});
export type RevokeDeviceResponse = z.infer<typeof RevokeDeviceResponseSchema>;

// --- history -------------------------------------------------------------------------------------------------------

/** An instant in a query: epoch milliseconds or an ISO 8601 date. */
export const QueryInstantSchema = z
  .string()
  .max(40)
  .describe('epoch milliseconds or an ISO 8601 date')
  .transform((value, ctx) => {
    const date = /^\d+$/.test(value) ? new Date(Number(value)) : new Date(value);
    if (Number.isNaN(date.getTime())) {
      ctx.addIssue({ code: 'custom', message: 'expected epoch milliseconds or an ISO 8601 date' });
      return z.NEVER;
    }
    return date;
  });

const HOUR_MS = 3600 * 1000;
const MAX_RANGE_MS = 400 * 24 * HOUR_MS;

/** `GET /api/v1/devices/:id/telemetry` query: `from`/`to` (default the last hour), minute or hour buckets. */
export const DeviceTelemetryQuerySchema = z
  .object({
    from: QueryInstantSchema.optional(),
    to: QueryInstantSchema.optional(),
    bucketSeconds: z.enum(['60', '3600']).transform(Number).optional().describe('60 (minute buckets) or 3600 (hour buckets); default: minutes up to 48 h, else hours'),
  })
  .transform((q) => {
    const to = q.to ?? new Date();
    const from = q.from ?? new Date(to.getTime() - HOUR_MS);
    return { from, to, bucketSeconds: (q.bucketSeconds ?? (to.getTime() - from.getTime() > 48 * HOUR_MS ? 3600 : 60)) as 60 | 3600 };
  })
  .refine((q) => q.from.getTime() <= q.to.getTime(), { message: '`from` must not be after `to`', path: ['from'] })
  .refine((q) => q.to.getTime() - q.from.getTime() <= MAX_RANGE_MS, { message: 'the range may span at most 400 days', path: ['from'] })
  .refine((q) => q.bucketSeconds === 3600 || q.to.getTime() - q.from.getTime() <= 7 * 24 * HOUR_MS, {
    message: 'minute buckets cover at most 7 days; ask for bucketSeconds=3600',
    path: ['bucketSeconds'],
  });
export type DeviceTelemetryQuery = z.input<typeof DeviceTelemetryQuerySchema>;

/** `GET /api/v1/devices/:id/telemetry`: the buckets in the range, oldest first. */
export const DeviceTelemetrySchema = z.object({
  deviceId: DeviceIdSchema,
  from: Instant,
  to: Instant,
  bucketSeconds: z.union([z.literal(60), z.literal(3600)]),
  items: z.array(TelemetryPointSchema),
});
export type DeviceTelemetry = z.infer<typeof DeviceTelemetrySchema>;

/** `GET /api/v1/devices/:id/status-history` query (default: the last 7 days). */
export const DeviceStatusHistoryQuerySchema = z.object({
  from: QueryInstantSchema.optional(),
  to: QueryInstantSchema.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(200),
});
export type DeviceStatusHistoryQuery = z.input<typeof DeviceStatusHistoryQuerySchema>;

/** One status change of a device. */
export const DeviceStatusChangeSchema = z.object({
  status: DeviceStatusSchema,
  previous: DeviceStatusSchema.nullable(),
  /** e.g. `hello`, `connection-lost`, `shutdown`, `keepalive`, `restart-grace`, `revoked` */
  reason: z.string().nullable(),
  at: Instant,
});
export type DeviceStatusChange = z.infer<typeof DeviceStatusChangeSchema>;

/** `GET /api/v1/devices/:id/status-history`: newest first. */
export const DeviceStatusHistorySchema = z.object({ deviceId: DeviceIdSchema, items: z.array(DeviceStatusChangeSchema) });
export type DeviceStatusHistory = z.infer<typeof DeviceStatusHistorySchema>;

/** `GET /api/v1/devices/:id/events` query. */
export const DeviceEventsQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  before: QueryInstantSchema.optional().describe('only events before this instant (paging backwards: pass the last item\'s `at`)'),
});
export type DeviceEventsQuery = z.input<typeof DeviceEventsQuerySchema>;

/** One event a device reported [P-3.10] (or the control plane recorded about it: `seq` null). */
export const DeviceEventViewSchema = z.object({
  seq: z.int().min(1).nullable(),
  at: Instant,
  level: DeviceEventSchema.shape.level,
  code: z.string(),
  message: z.string(),
  model: z.string().nullable(),
  requestId: z.string().nullable(),
  details: DetailsSchema.nullable(),
});
export type DeviceEventView = z.infer<typeof DeviceEventViewSchema>;

/** `GET /api/v1/devices/:id/events`: newest first. */
export const DeviceEventsSchema = z.object({ deviceId: DeviceIdSchema, items: z.array(DeviceEventViewSchema) });
export type DeviceEvents = z.infer<typeof DeviceEventsSchema>;
