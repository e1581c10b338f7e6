import { Inject, Injectable } from '@nestjs/common';
import {
  type DeviceDetail,
  type DeviceEventView,
  type DeviceHardware,
  DeviceHardwareSchema,
  type DeviceListItem,
  type DeviceModelState,
  type DevicePage,
  DeviceEventViewSchema,
  type DeviceStatusChange,
  type RevokeDeviceResponse,
  type TelemetryPoint,
  type UpdateDeviceRequestSchema,
} from '@flotilla/protocol';
import type { z } from 'zod';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../../identity/audit/audit.service.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import { notFound } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { ModelState, Prisma, TelemetryRollup } from '../../generated/prisma/client.js';
import { DeviceQueue } from '../ingest/device-queue.js';
import { DevicePresence, type PresenceStatus } from '../ingest/device-presence.js';
import { DeviceLivenessService } from '../ingest/liveness.service.js';
import { TelemetryCache } from '../ingest/telemetry-cache.js';
import { DeviceCredentialCache } from './device-credentials.js';

/** Hardware as stored (the hello's inventory, or the enrollment's summary, or `{}`): null until a usable report. */
function storedHardware(value: unknown): DeviceHardware | null {
  const parsed = DeviceHardwareSchema.safeParse(value);
  return parsed.success ? parsed.data : null;
}

export function modelStateView(row: ModelState): DeviceModelState {
  return {
    model: row.modelName,
    sha256: row.sha256,
    state: row.state,
    loaded: row.loaded,
    progress: row.progress,
    receivedBytes: row.receivedBytes === null ? null : Number(row.receivedBytes),
    totalBytes: row.totalBytes === null ? null : Number(row.totalBytes),
    errorCode: row.errorCode,
    errorMessage: row.errorMessage,
    desiredVersion: row.desiredVersion,
    since: row.updatedAt.toISOString(),
  };
}

export function telemetryPoint(row: TelemetryRollup): TelemetryPoint {
  return {
    bucketStart: row.bucketStart.toISOString(),
    bucketSeconds: row.bucketSeconds,
    samples: row.samples,
    cpuAvg: row.cpuAvg,
    cpuMax: row.cpuMax,
    memoryAvgBytes: row.memoryAvgBytes,
    memoryMaxBytes: row.memoryMaxBytes,
    vramAvgBytes: row.vramAvgBytes,
    vramMaxBytes: row.vramMaxBytes,
    tokensPerSecondAvg: row.tokensPerSecondAvg,
    tokensPerSecondMax: row.tokensPerSecondMax,
    queueAvg: row.queueAvg,
    queueMax: row.queueMax,
    requests: row.requests,
    failures: row.failures,
  };
}

/** Device detail, telemetry history, edits and revocation for the REST API. */
@Injectable()
export class DevicesService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly audit: AuditService,
    private readonly events: FleetEvents,
    private readonly queue: DeviceQueue,
    private readonly liveness: DeviceLivenessService,
    private readonly telemetry: TelemetryCache,
    private readonly presence: DevicePresence,
    private readonly credentials: DeviceCredentialCache,
  ) {}

  /**
   * Devices by id, `status` as `presenceStatus` shows it: filtering on `online` or `draining` leaves reconnecting devices
   * out, `reconnecting` lists only them (a small set: only during the reconnect grace after a start).
   */
  async list(limit: number, cursor: string | undefined, status: PresenceStatus | undefined): Promise<DevicePage> {
    const reconnecting = status === 'reconnecting' || status === 'online' || status === 'draining' ? await this.presence.reconnectingDevices() : new Map<string, unknown>();
    const where: Prisma.DeviceWhereInput =
      status === undefined
        ? {}
        : status === 'reconnecting'
          ? { id: { in: [...reconnecting.keys()] } }
          : { status, ...(reconnecting.size > 0 ? { id: { notIn: [...reconnecting.keys()] } } : {}) };
    const rows = await this.db.prisma.device.findMany({
      take: limit + 1,
      ...(cursor ? { cursor: { id: cursor }, skip: 0 } : {}),
      where,
      orderBy: { id: 'asc' },
      select: { id: true, name: true, labels: true, hardware: true, agentVersion: true, status: true, lastSeenAt: true, createdAt: true },
    });
    const items = rows.slice(0, limit).map(
      (r): DeviceListItem => ({
        id: r.id,
        name: r.name,
        labels: r.labels as Record<string, string>,
        hardware: storedHardware(r.hardware),
        agentVersion: r.agentVersion,
        status: this.presence.status(r.id, r.status),
        lastSeenAt: r.lastSeenAt?.toISOString() ?? null,
        createdAt: r.createdAt.toISOString(),
      }),
    );
    return { items, nextCursor: rows.length > limit ? (rows[limit]?.id ?? null) : null };
  }

  async detail(id: string): Promise<DeviceDetail> {
    const device = await this.db.prisma.device.findUnique({
      where: { id },
      include: { modelStates: { orderBy: { modelName: 'asc' } } },
    });
    if (!device) throw notFound(`device ${id}`);
    const lastRollup = await this.db.prisma.telemetryRollup.findFirst({
      where: { deviceId: id, bucketSeconds: 60 },
      orderBy: { bucketStart: 'desc' },
    });
    const latest = this.telemetry.latest(id);
    return {
      id: device.id,
      name: device.name,
      labels: device.labels as Record<string, string>,
      hardware: storedHardware(device.hardware),
      agentVersion: device.agentVersion,
      status: this.presence.status(id, device.status),
      connected: this.broker.isConnected(id),
      lastSeenAt: device.lastSeenAt?.toISOString() ?? null,
      createdAt: device.createdAt.toISOString(),
      updatedAt: device.updatedAt.toISOString(),
      desiredVersion: device.desiredVersion,
      reportedDesiredVersion: device.reportedDesiredVersion,
      modelStates: device.modelStates.map(modelStateView),
      lastTelemetry: latest ? { ...latest.sample, receivedAt: new Date(latest.receivedAt).toISOString() } : null,
      lastRollup: lastRollup ? telemetryPoint(lastRollup) : null,
    };
  }

  async telemetryHistory(id: string, from: Date, to: Date, bucketSeconds: 60 | 3600): Promise<TelemetryPoint[]> {
    await this.assertExists(id);
    const rows = await this.db.prisma.telemetryRollup.findMany({
      where: { deviceId: id, bucketSeconds, bucketStart: { gte: from, lte: to } },
      orderBy: { bucketStart: 'asc' },
    });
    return rows.map(telemetryPoint);
  }

  async statusHistory(id: string, from: Date, to: Date, limit: number): Promise<DeviceStatusChange[]> {
    await this.assertExists(id);
    const rows = await this.db.prisma.deviceStatusChange.findMany({
      where: { deviceId: id, at: { gte: from, lte: to } },
      orderBy: { at: 'desc' },
      take: limit,
    });
    return rows.map((r) => ({ status: r.status, previous: r.previous, reason: r.reason, at: r.at.toISOString() }));
  }

  async deviceEvents(id: string, limit: number, before: Date | undefined): Promise<DeviceEventView[]> {
    await this.assertExists(id);
    const rows = await this.db.prisma.deviceEvent.findMany({
      where: { deviceId: id, ...(before ? { at: { lt: before } } : {}) },
      orderBy: [{ at: 'desc' }, { id: 'desc' }],
      take: limit,
    });
    return rows.map((r) => ({
      seq: r.seq === null ? null : Number(r.seq),
      at: r.at.toISOString(),
      // Stored only from validated device events and the ingest's own warn/error events.
      level: DeviceEventViewSchema.shape.level.parse(r.level),
      code: r.code,
      message: r.message,
      model: r.model,
      requestId: r.requestId,
      details: r.details as Record<string, unknown> | null,
    }));
  }

  /** Name and labels (labels replace the whole map); audited; `device.updated` lets the scheduler re-place. */
  async update(id: string, input: z.output<typeof UpdateDeviceRequestSchema>, actor: Actor): Promise<DeviceDetail> {
    const fields = await this.db.prisma.$transaction(async (tx) => {
      const device = await tx.device.findUnique({ where: { id }, select: { name: true, labels: true } });
      if (!device) throw notFound(`device ${id}`);
      const changed: string[] = [];
      if (input.name !== undefined && input.name !== device.name) changed.push('name');
      if (input.labels !== undefined && !sameLabels(input.labels, device.labels as Record<string, string>)) changed.push('labels');
      if (changed.length === 0) return changed;
      await tx.device.update({
        where: { id },
        data: {
          ...(changed.includes('name') ? { name: input.name } : {}),
          ...(changed.includes('labels') ? { labels: input.labels } : {}),
        },
      });
      await this.audit.record(actor, 'device.update', `device:${id}`, {
        fields: changed,
        ...(changed.includes('name') ? { name: input.name ?? null } : {}),
        ...(changed.includes('labels') ? { labels: input.labels ?? {} } : {}),
      }, tx);
      return changed;
    });
    if (fields.length > 0) this.events.emit('device.updated', { deviceId: id, fields });
    return this.detail(id);
  }

  /**
   * Revokes the device's credentials and cuts its live MQTT session: the broker's authentication refuses revoked
   * devices, so it cannot reconnect. Idempotent; audited once.
   */
  async revoke(id: string, actor: Actor): Promise<RevokeDeviceResponse> {
    const result = await this.queue.run(id, async () => {
      const outcome = await this.db.prisma.$transaction(async (tx) => {
        const device = await tx.device.findUnique({ where: { id }, select: { status: true, updatedAt: true } });
        if (!device) throw notFound(`device ${id}`);
        if (device.status === 'revoked') {
          const credential = await tx.deviceCredential.findFirst({ where: { deviceId: id }, orderBy: { revokedAt: 'desc' } });
          return { previous: null, revokedAt: credential?.revokedAt ?? device.updatedAt };
        }
        const revokedAt = new Date();
        await tx.device.update({ where: { id }, data: { status: 'revoked' } });
        const credentials = await tx.deviceCredential.updateMany({ where: { deviceId: id, revokedAt: null }, data: { revokedAt } });
        await tx.deviceStatusChange.create({ data: { deviceId: id, status: 'revoked', previous: device.status, reason: 'revoked' } });
        await this.audit.record(actor, 'device.revoke', `device:${id}`, { previous: device.status, credentials: credentials.count }, tx);
        return { previous: device.status, revokedAt };
      });
      this.liveness.remember(id, 'revoked', null);
      return outcome;
    });
    // After the commit: a reconnect attempt from now on is refused by the broker's authentication (which checks the
    // credential cache: dropped here, and the device remembered as revoked).
    this.credentials.revokeDevice(id);
    const disconnected = this.broker.disconnect(id);
    // A connection whose authentication was already under way when we committed: cut it too.
    setTimeout(() => this.broker.closed || this.broker.disconnect(id), 1000).unref();
    if (result.previous !== null) {
      this.logger.info({ deviceId: id, disconnected }, 'device revoked');
      this.events.emit('device.status', { deviceId: id, status: 'revoked', previous: result.previous, at: result.revokedAt.toISOString() });
    }
    return { id, status: 'revoked', revokedAt: result.revokedAt.toISOString(), disconnected };
  }

  private async assertExists(id: string): Promise<void> {
    const found = await this.db.prisma.device.findUnique({ where: { id }, select: { id: true } });
    if (!found) throw notFound(`device ${id}`);
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => b[k] === a[k]);
}
