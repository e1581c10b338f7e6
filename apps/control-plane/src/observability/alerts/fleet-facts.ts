import { Inject, Injectable } from '@nestjs/common';
import { z } from 'zod';
import { DATABASE } from '../../platform/tokens.js';
import type { Database } from '../../platform/database/index.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import type { DeviceFacts, OpenAlert, TelemetryFacts, TrafficFacts } from './alert-rules.js';

/** A deployment with where its replicas are and how many serve. */
export interface DeploymentFacts {
  id: string;
  name: string;
  model: string;
  replicas: number;
  parallel: number;
  placedDeviceIds: string[];
  ready: number;
}

export interface OpenAlertFacts extends OpenAlert {
  severity: 'info' | 'warning' | 'critical';
}

// Only what the rules need from the hardware JSON; anything else (or a malformed report) is ignored.
const hardwareShape = z.object({
  memory: z.object({ totalBytes: z.number().nonnegative() }).partial().optional(),
  gpus: z.array(z.object({ vramBytes: z.number().nonnegative() }).partial()).optional(),
});

/** Reads what the alert rules, fleet health and scaling recommendations reason about. */
@Injectable()
export class FleetFactsReader {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly presence: DevicePresence,
  ) {}

  async devices(): Promise<DeviceFacts[]> {
    const rows = await this.db.prisma.device.findMany({
      select: { id: true, name: true, status: true, lastSeenAt: true, createdAt: true, hardware: true },
      orderBy: { id: 'asc' },
    });
    return rows.map((d) => {
      const hardware = hardwareShape.safeParse(d.hardware);
      const memory = hardware.success ? hardware.data.memory?.totalBytes : undefined;
      const vram = hardware.success ? (hardware.data.gpus ?? []).reduce((sum, g) => sum + (g.vramBytes ?? 0), 0) : 0;
      return {
        id: d.id,
        name: d.name,
        status: d.status,
        since: d.lastSeenAt ?? d.createdAt,
        seen: d.lastSeenAt !== null,
        memoryTotalBytes: memory ? memory : null,
        vramTotalBytes: vram > 0 ? vram : null,
      };
    });
  }

  /** Minute rollups overlapping [since, now]. */
  async telemetry(since: Date): Promise<TelemetryFacts[]> {
    const rows = await this.db.prisma.telemetryRollup.findMany({
      where: { bucketSeconds: 60, bucketStart: { gt: new Date(since.getTime() - 60_000) } },
      select: {
        deviceId: true,
        samples: true,
        queueAvg: true,
        memoryAvgBytes: true,
        vramAvgBytes: true,
        cpuAvg: true,
        requests: true,
        failures: true,
      },
    });
    return rows;
  }

  /**
   * Gateway requests since `since`, per model (the requested one when no model answered). Failures are the `failed`
   * and `timeout` outcomes; `cancelled` requests (the client went away) count neither way.
   */
  async traffic(since: Date): Promise<TrafficFacts[]> {
    const rows = await this.db.prisma.$queryRaw<
      { model: string; requests: bigint | number; failures: bigint | number; p95: number | string | null; busy_ms: bigint | number | string | null }[]
    >`
      SELECT COALESCE(model, requested_model) AS model,
             COUNT(*) AS requests,
             COUNT(*) FILTER (WHERE outcome IN ('failed', 'timeout')) AS failures,
             percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
             COALESCE(SUM(latency_ms), 0) AS busy_ms
      FROM inference_requests
      WHERE created_at >= ${since} AND outcome <> 'cancelled'
      GROUP BY COALESCE(model, requested_model)
      ORDER BY 1`;
    return rows.map((r) => ({
      model: r.model,
      requests: Number(r.requests),
      failures: Number(r.failures),
      latencyP95Ms: r.p95 === null ? null : Number(r.p95),
      busyMs: Number(r.busy_ms ?? 0),
    }));
  }

  async deployments(): Promise<DeploymentFacts[]> {
    const [rows, ready] = await Promise.all([
      this.db.prisma.deployment.findMany({
        select: { id: true, name: true, replicas: true, parallel: true, model: { select: { name: true } }, placements: { select: { deviceId: true } } },
        orderBy: { name: 'asc' },
      }),
      this.presence.reconnectingDevices().then((reconnecting) => readyReplicaCounts(this.db, reconnecting)),
    ]);
    return rows.map((d) => ({
      id: d.id,
      name: d.name,
      model: d.model.name,
      replicas: d.replicas,
      parallel: d.parallel,
      placedDeviceIds: d.placements.map((p) => p.deviceId),
      ready: ready.get(d.id) ?? 0,
    }));
  }

  async openAlerts(): Promise<OpenAlertFacts[]> {
    return this.db.prisma.alert.findMany({
      where: { state: 'open' },
      select: { id: true, rule: true, subject: true, severity: true },
      orderBy: [{ openedAt: 'asc' }, { id: 'asc' }],
    });
  }
}

/**
 * Ready replicas per deployment: placements on online devices whose reported state for the model is `ready`, leaving
 * out devices still reconnecting after a restart (`DevicePresence`): their state is an
 * earlier process's knowledge. Shared with fleet health, recommendations and metrics.
 */
export async function readyReplicaCounts(db: Database, reconnecting: { has(deviceId: string): boolean }): Promise<Map<string, number>> {
  const rows = await db.prisma.$queryRaw<{ deployment_id: string; device_id: string }[]>`
    SELECT p.deployment_id, p.device_id
    FROM placements p
    JOIN devices d ON d.id = p.device_id AND d.status = 'online'
    JOIN models m ON m.id = p.model_id
    JOIN model_states s ON s.device_id = p.device_id AND s.model_name = m.name AND s.state = 'ready'
    WHERE p.deployment_id IS NOT NULL`;
  const counts = new Map<string, number>();
  for (const r of rows) if (!reconnecting.has(r.device_id)) counts.set(r.deployment_id, (counts.get(r.deployment_id) ?? 0) + 1);
  return counts;
}
