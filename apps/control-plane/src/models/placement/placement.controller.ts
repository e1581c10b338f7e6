import { Controller, Get, HttpCode, Inject, Post, Query } from '@nestjs/common';
import {
  PlacementListQuerySchema,
  PlacementPageSchema,
  SchedulerStatusSchema,
  type Page,
  type PlacementView,
  type SchedulerStatus,
} from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { RequireRole } from '../../identity/auth/auth.guard.js';
import { toPage } from '../catalog/inputs.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Database } from '../../platform/database/index.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import { PlacementService } from './placement.service.js';

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
  @ApiDoc({ summary: "Placements: the models each device should hold, with the device's reported state", tags: ['placements'], query: PlacementListQuerySchema, response: PlacementPageSchema })
  async placements(@Query() query: unknown): Promise<Page<PlacementView>> {
    const q = parseInput(PlacementListQuerySchema, query);
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
        updatedAt: r.updatedAt.toISOString(),
      };
    });
  }

  @RequireRole('viewer')
  @Get('scheduler')
  @ApiDoc({ summary: "The scheduler's last run: what it changed, each deployment's placement status", tags: ['placements'], response: SchedulerStatusSchema })
  status(): SchedulerStatus {
    return { lastRun: this.scheduler.lastRun() ?? null, counters: this.scheduler.counters() };
  }

  /** Plans now instead of waiting for the next event or period. */
  @RequireRole('operator')
  @Post('scheduler/run')
  @HttpCode(200)
  @ApiDoc({ summary: 'Run the scheduler now (it also runs on fleet events and periodically)', tags: ['placements'], response: SchedulerStatusSchema })
  async run(): Promise<SchedulerStatus> {
    const lastRun = (await this.scheduler.runNow()) ?? null;
    return { lastRun, counters: this.scheduler.counters() };
  }
}
