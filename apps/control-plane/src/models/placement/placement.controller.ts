import { Controller, Get, HttpCode, Inject, Post, Query } from '@nestjs/common';
import { DeviceIdSchema } from '@flotilla/protocol';
import { z } from 'zod';
import { DATABASE } from '../../platform/tokens.js';
import { RequireRole } from '../../identity/auth/auth.guard.js';
import { PageQuerySchema, toPage, type Page } from '../catalog/inputs.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Database } from '../../platform/database/index.js';
import { ApiDoc, pageSchema } from '../../platform/openapi/api-doc.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import { PlacementService, type ScheduleRun } from './placement.service.js';

const placementsQuery = PageQuerySchema.extend({
  deviceId: DeviceIdSchema.optional(),
  deploymentId: z.string().min(1).max(128).optional(),
});

const placementSchema = z.object({
  id: z.string(),
  deviceId: z.string(),
  deviceName: z.string(),
  deviceStatus: z.string().describe('the stored status, or `reconnecting` while the device has not come back since the control plane started'),
  model: z.string(),
  modelId: z.string(),
  deploymentId: z.string().nullable(),
  deployment: z.string().nullable(),
  desiredVersion: z.number(),
  loaded: z.boolean(),
  pinned: z.boolean(),
  contextSize: z.number().nullable(),
  parallel: z.number(),
  state: z.string().nullable(),
  ready: z.boolean().describe('reported ready and in memory with the catalog\'s file, on a device that is not reconnecting'),
  updatedAt: z.date(),
});

const runSchema = z.object({
  lastRun: z
    .object({
      at: z.date(),
      durationMs: z.number(),
      added: z.number(),
      removed: z.number(),
      updated: z.number(),
      publishedDeviceIds: z.array(z.string()),
      deployments: z.array(z.object({ deploymentId: z.string(), name: z.string(), wanted: z.number(), placed: z.number(), ready: z.number(), rollingOut: z.boolean() }).loose()),
    })
    .nullable(),
});

export interface PlacementView {
  id: string;
  deviceId: string;
  deviceName: string;
  deviceStatus: string;
  model: string;
  modelId: string;
  deploymentId: string | null;
  deployment: string | null;
  /** the device's desired-state version when this placement last changed */
  desiredVersion: number;
  loaded: boolean;
  pinned: boolean;
  contextSize: number | null;
  parallel: number;
  /** the model's state as the device last reported it; null before any report */
  state: string | null;
  /** reported ready and in memory with the catalog's file, on a device that is not reconnecting */
  ready: boolean;
  updatedAt: Date;
}

/** Placements (the devices' desired state) and the scheduler's last run. */
@Controller('api/v1')
export class PlacementController {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly scheduler: PlacementService,
    private readonly presence: DevicePresence,
  ) {}

  @RequireRole('viewer')
  @Get('placements')
  @ApiDoc({ summary: "Placements: the models each device should hold, with the device's reported state", tags: ['placements'], query: placementsQuery, response: pageSchema(placementSchema) })
  async placements(@Query() query: unknown): Promise<Page<PlacementView>> {
    const q = parseInput(placementsQuery, query);
    const rows = await this.db.prisma.placement.findMany({
      where: { ...(q.deviceId ? { deviceId: q.deviceId } : {}), ...(q.deploymentId ? { deploymentId: q.deploymentId } : {}) },
      include: {
        device: { select: { name: true, status: true, modelStates: true } },
        model: { select: { name: true, sha256: true } },
        deployment: { select: { name: true } },
      },
      take: q.limit + 1,
      ...(q.cursor ? { cursor: { id: q.cursor } } : {}),
      orderBy: [{ deviceId: 'asc' }, { id: 'asc' }],
    });
    return toPage(rows, q.limit, (r) => {
      const state = r.device.modelStates.find((s) => s.modelName === r.model.name);
      const deviceStatus = this.presence.status(r.deviceId, r.device.status);
      return {
        id: r.id,
        deviceId: r.deviceId,
        deviceName: r.device.name,
        deviceStatus,
        model: r.model.name,
        modelId: r.modelId,
        deploymentId: r.deploymentId,
        deployment: r.deployment?.name ?? null,
        desiredVersion: r.desiredVersion,
        loaded: r.loaded,
        pinned: r.pinned,
        contextSize: r.contextSize,
        parallel: r.parallel,
        state: state?.state ?? null,
        ready:
          deviceStatus !== 'reconnecting' &&
          state !== undefined &&
          state.state === 'ready' && state.loaded && (state.sha256 === null || state.sha256 === r.model.sha256),
        updatedAt: r.updatedAt,
      };
    });
  }

  @RequireRole('viewer')
  @Get('scheduler')
  @ApiDoc({ summary: "The scheduler's last run: what it changed, each deployment's placement status", tags: ['placements'], response: runSchema })
  status(): { lastRun: ScheduleRun | null } {
    return { lastRun: this.scheduler.lastRun() ?? null };
  }

  /** Plans now instead of waiting for the next event or period. */
  @RequireRole('operator')
  @Post('scheduler/run')
  @HttpCode(200)
  @ApiDoc({ summary: 'Run the scheduler now (it also runs on fleet events and periodically)', tags: ['placements'], response: runSchema })
  async run(): Promise<{ lastRun: ScheduleRun | null }> {
    return { lastRun: (await this.scheduler.runNow()) ?? null };
  }
}
