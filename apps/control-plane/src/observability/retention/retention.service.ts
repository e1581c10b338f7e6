import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../../platform/tokens.js';
import { PeriodicJob } from '../../platform/common/periodic-job.js';
import type { Database } from '../../platform/database/index.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from '../../devices/ingest/device-ingest.settings.js';

export interface RetentionSweep {
  telemetryRollups: number;
  deviceEvents: number;
  statusChanges: number;
  requestRollups: number;
  requests: number;
}

/**
 * Deletes telemetry buckets past their `expiresAt` (set from the retention period when written) and device events
 * and status history older than the history retention, request rollups past their `expiresAt` and raw request rows
 * older than the request retention that are already rolled up (behind the newest minute rollup). Runs at start and
 * every `retentionSweepMs`.
 */
@Injectable()
export class RetentionService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly job: PeriodicJob;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(REGISTRY_SETTINGS) private readonly settings: RegistrySettings,
  ) {
    this.job = new PeriodicJob('retention sweep', logger);
  }

  onApplicationBootstrap(): void {
    this.job.start(this.settings.retentionSweepMs, () => this.sweep());
  }

  onModuleDestroy(): Promise<void> {
    return this.job.stop();
  }

  async sweep(now: Date = new Date()): Promise<RetentionSweep> {
    const historyCutoff = new Date(now.getTime() - this.settings.historyRetentionMs);
    const telemetryRollups = (await this.db.prisma.telemetryRollup.deleteMany({ where: { expiresAt: { lt: now } } })).count;
    const deviceEvents = (await this.db.prisma.deviceEvent.deleteMany({ where: { receivedAt: { lt: historyCutoff } } })).count;
    const statusChanges = (await this.db.prisma.deviceStatusChange.deleteMany({ where: { at: { lt: historyCutoff } } })).count;
    const requestRollups = (await this.db.prisma.requestRollup.deleteMany({ where: { expiresAt: { lt: now } } })).count;
    // Raw rows go only once the rollup job has passed them, so no request is lost from the long windows.
    const watermark = (await this.db.prisma.requestRollup.aggregate({ where: { bucketSeconds: 60 }, _max: { bucketStart: true } }))._max.bucketStart;
    const requestCutoff = Math.min(now.getTime() - this.settings.requestRetentionMs, watermark?.getTime() ?? -Infinity);
    const requests = Number.isFinite(requestCutoff)
      ? (await this.db.prisma.inferenceRequest.deleteMany({ where: { createdAt: { lt: new Date(requestCutoff) } } })).count
      : 0;
    if (telemetryRollups + deviceEvents + statusChanges + requestRollups + requests > 0) {
      this.logger.info({ telemetryRollups, deviceEvents, statusChanges, requestRollups, requests }, 'retention sweep deleted old rows');
    }
    return { telemetryRollups, deviceEvents, statusChanges, requestRollups, requests };
  }
}
