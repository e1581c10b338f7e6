import { Body, Controller, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { DEVICE_ID_PATTERN } from '@flotilla/protocol';
import { z } from 'zod';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import { notFound, unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc, pageSchema } from '../../platform/openapi/api-doc.js';
import { type DeviceDetail, type DeviceListItem, DevicesService, PRESENCE_STATUSES, type RevokeResult, type TelemetryPoint } from './devices.service.js';

const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional(),
  /** `online`/`draining` leave reconnecting devices out; `reconnecting` lists only them */
  status: z.enum(PRESENCE_STATUSES).optional(),
});

const presenceStatus = z
  .enum(PRESENCE_STATUSES)
  .describe('the stored status, or `reconnecting`: stored as online/draining before this control plane started and not back yet (no hello, no live session)');

const deviceListItemSchema = z.object({
  id: z.string(),
  name: z.string(),
  labels: z.record(z.string(), z.string()),
  hardware: z.unknown(),
  agentVersion: z.string().nullable(),
  status: presenceStatus,
  lastSeenAt: z.date().nullable(),
  createdAt: z.date(),
});

const deviceDetailSchema = deviceListItemSchema.extend({
  connected: z.boolean().describe('a live MQTT session right now'),
  lastSeenAt: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  desiredVersion: z.number(),
  reportedDesiredVersion: z.number(),
  modelStates: z.array(z.object({ model: z.string(), state: z.string(), loaded: z.boolean() }).loose()),
  lastTelemetry: z.object({ receivedAt: z.string() }).loose().nullable().describe('the newest sample received since this control plane started'),
  lastRollup: z.object({ bucketStart: z.string(), bucketSeconds: z.number() }).loose().nullable().describe('the newest minute bucket'),
});

const idParams = z.object({ id: z.string().describe('device id') });

/** An instant as epoch milliseconds or an ISO 8601 date. */
const instant = z
  .string()
  .max(40)
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

const rangeQuery = z
  .object({
    from: instant.optional(),
    to: instant.optional(),
    /** 60 (minute buckets) or 3600 (hour buckets); default: minutes up to 48 h, else hours */
    bucketSeconds: z.enum(['60', '3600']).transform(Number).optional(),
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

const historyQuery = z.object({
  from: instant.optional(),
  to: instant.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(200),
});

const eventsQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  /** only events before this instant (paging backwards: pass the last item's `at`) */
  before: instant.optional(),
});

const labelsSchema = z
  .record(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$/, 'label keys are 1-63 letters, digits, ".", "_", "/", "-"'), z.string().max(128))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

const updateBody = z
  .strictObject({
    name: z.string().trim().min(1).max(128).optional(),
    labels: labelsSchema.optional(),
  })
  .refine((b) => b.name !== undefined || b.labels !== undefined, 'nothing to change: give name and/or labels');

function deviceId(id: string): string {
  // Every device id matches the protocol's pattern; anything else cannot exist.
  if (!DEVICE_ID_PATTERN.test(id)) throw notFound(`device ${id.slice(0, 80)}`);
  return id;
}

@Controller('api/v1/devices')
export class DevicesController {
  constructor(private readonly devices: DevicesService) {}

  @RequireRole('viewer')
  @Get()
  @ApiDoc({ summary: 'Devices with their status (reconnecting ones after a restart say so)', tags: ['devices'], query: listQuery, response: pageSchema(deviceListItemSchema) })
  list(@Query() query: unknown): Promise<{ items: DeviceListItem[]; nextCursor: string | null }> {
    const { limit, cursor, status } = parseInput(listQuery, query);
    return this.devices.list(limit, cursor, status);
  }

  /** Hardware, status, model states and the latest telemetry of one device. */
  @RequireRole('viewer')
  @Get(':id')
  @ApiDoc({ summary: 'One device: hardware, status, model states, latest telemetry', tags: ['devices'], params: idParams, response: deviceDetailSchema, errors: [404] })
  detail(@Param('id') id: string): Promise<DeviceDetail> {
    return this.devices.detail(deviceId(id));
  }

  /** Telemetry rollups for charts: `?from&to` (epoch ms or ISO; default the last hour), `bucketSeconds` 60 or 3600. */
  @RequireRole('viewer')
  @Get(':id/telemetry')
  async telemetry(@Param('id') id: string, @Query() query: unknown): Promise<{ deviceId: string; from: string; to: string; bucketSeconds: number; items: TelemetryPoint[] }> {
    const { from, to, bucketSeconds } = parseInput(rangeQuery, query);
    const items = await this.devices.telemetryHistory(deviceId(id), from, to, bucketSeconds);
    return { deviceId: id, from: from.toISOString(), to: to.toISOString(), bucketSeconds, items };
  }

  /** Status changes, newest first (default: the last 7 days). */
  @RequireRole('viewer')
  @Get(':id/status-history')
  async statusHistory(@Param('id') id: string, @Query() query: unknown) {
    const q = parseInput(historyQuery, query);
    const to = q.to ?? new Date();
    const from = q.from ?? new Date(to.getTime() - 7 * 24 * HOUR_MS);
    return { deviceId: id, items: await this.devices.statusHistory(deviceId(id), from, to, q.limit) };
  }

  /** Events the device reported, newest first. */
  @RequireRole('viewer')
  @Get(':id/events')
  async events(@Param('id') id: string, @Query() query: unknown) {
    const q = parseInput(eventsQuery, query);
    return { deviceId: id, items: await this.devices.deviceEvents(deviceId(id), q.limit, q.before) };
  }

  /** Rename and relabel (labels replace the whole map). */
  @RequireRole('operator')
  @Patch(':id')
  update(@Param('id') id: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeviceDetail> {
    const principal = request.principal;
    if (!principal) throw unauthorized();
    return this.devices.update(deviceId(id), parseInput(updateBody, body), principal.actor);
  }

  /** Revokes the device's credentials and cuts its MQTT session; it cannot reconnect. */
  @RequireRole('admin')
  @Post(':id/revoke')
  @HttpCode(200)
  revoke(@Param('id') id: string, @Req() request: AuthedRequest): Promise<RevokeResult> {
    const principal = request.principal;
    if (!principal) throw unauthorized();
    return this.devices.revoke(deviceId(id), principal.actor);
  }
}
