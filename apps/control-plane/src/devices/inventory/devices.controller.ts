import { Body, Controller, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import {
  DEVICE_ID_PATTERN,
  type DeviceDetail,
  DeviceDetailSchema,
  type DeviceEvents,
  DeviceEventsQuerySchema,
  DeviceEventsSchema,
  DeviceIdParamsSchema,
  DeviceListQuerySchema,
  type DevicePage,
  DevicePageSchema,
  type DeviceStatusHistory,
  DeviceStatusHistoryQuerySchema,
  DeviceStatusHistorySchema,
  type DeviceTelemetry,
  DeviceTelemetryQuerySchema,
  DeviceTelemetrySchema,
  RevokeDeviceResponseSchema,
  type RevokeDeviceResponse,
  UpdateDeviceRequestSchema,
} from '@flotilla/protocol';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import { notFound, unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { DevicesService } from './devices.service.js';

const WEEK_MS = 7 * 24 * 3600 * 1000;

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
  @ApiDoc({ summary: 'Devices with their status (reconnecting ones after a restart say so)', tags: ['devices'], query: DeviceListQuerySchema, response: DevicePageSchema })
  list(@Query() query: unknown): Promise<DevicePage> {
    const { limit, cursor, status } = parseInput(DeviceListQuerySchema, query);
    return this.devices.list(limit, cursor, status);
  }

  /** Hardware, status, model states and the latest telemetry of one device. */
  @RequireRole('viewer')
  @Get(':id')
  @ApiDoc({ summary: 'One device: hardware, status, model states, latest telemetry', tags: ['devices'], params: DeviceIdParamsSchema, response: DeviceDetailSchema, errors: [404] })
  detail(@Param('id') id: string): Promise<DeviceDetail> {
    return this.devices.detail(deviceId(id));
  }

  /** Telemetry rollups for charts: `?from&to` (epoch ms or ISO; default the last hour), `bucketSeconds` 60 or 3600. */
  @RequireRole('viewer')
  @Get(':id/telemetry')
  @ApiDoc({
    summary: 'Telemetry rollups of one device for charts (minute or hour buckets)',
    tags: ['devices'],
    params: DeviceIdParamsSchema,
    query: DeviceTelemetryQuerySchema,
    response: DeviceTelemetrySchema,
    errors: [404],
  })
  async telemetry(@Param('id') id: string, @Query() query: unknown): Promise<DeviceTelemetry> {
    const { from, to, bucketSeconds } = parseInput(DeviceTelemetryQuerySchema, query);
    const items = await this.devices.telemetryHistory(deviceId(id), from, to, bucketSeconds);
    return { deviceId: id, from: from.toISOString(), to: to.toISOString(), bucketSeconds, items };
  }

  /** Status changes, newest first (default: the last 7 days). */
  @RequireRole('viewer')
  @Get(':id/status-history')
  @ApiDoc({
    summary: 'Status changes of one device, newest first (default: the last 7 days)',
    tags: ['devices'],
    params: DeviceIdParamsSchema,
    query: DeviceStatusHistoryQuerySchema,
    response: DeviceStatusHistorySchema,
    errors: [404],
  })
  async statusHistory(@Param('id') id: string, @Query() query: unknown): Promise<DeviceStatusHistory> {
    const q = parseInput(DeviceStatusHistoryQuerySchema, query);
    const to = q.to ?? new Date();
    const from = q.from ?? new Date(to.getTime() - WEEK_MS);
    return { deviceId: id, items: await this.devices.statusHistory(deviceId(id), from, to, q.limit) };
  }

  /** Events the device reported, newest first. */
  @RequireRole('viewer')
  @Get(':id/events')
  @ApiDoc({ summary: 'Events one device reported, newest first', tags: ['devices'], params: DeviceIdParamsSchema, query: DeviceEventsQuerySchema, response: DeviceEventsSchema, errors: [404] })
  async events(@Param('id') id: string, @Query() query: unknown): Promise<DeviceEvents> {
    const q = parseInput(DeviceEventsQuerySchema, query);
    return { deviceId: id, items: await this.devices.deviceEvents(deviceId(id), q.limit, q.before) };
  }

  /** Rename and relabel (labels replace the whole map). */
  @RequireRole('operator')
  @Patch(':id')
  @ApiDoc({
    summary: 'Rename or relabel a device (labels replace the whole map)',
    tags: ['devices'],
    params: DeviceIdParamsSchema,
    body: UpdateDeviceRequestSchema,
    response: DeviceDetailSchema,
    errors: [404],
  })
  update(@Param('id') id: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeviceDetail> {
    const principal = request.principal;
    if (!principal) throw unauthorized();
    return this.devices.update(deviceId(id), parseInput(UpdateDeviceRequestSchema, body), principal.actor);
  }

  /** Revokes the device's credentials and cuts its MQTT session; it cannot reconnect. */
  @RequireRole('admin')
  @Post(':id/revoke')
  @HttpCode(200)
  @ApiDoc({
    summary: "Revoke a device: its credentials stop working and its MQTT session is cut (idempotent)",
    tags: ['devices'],
    params: DeviceIdParamsSchema,
    response: RevokeDeviceResponseSchema,
    errors: [404],
  })
  revoke(@Param('id') id: string, @Req() request: AuthedRequest): Promise<RevokeDeviceResponse> {
    const principal = request.principal;
    if (!principal) throw unauthorized();
    return this.devices.revoke(deviceId(id), principal.actor);
  }
}
