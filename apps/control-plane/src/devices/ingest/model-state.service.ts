import { Inject, Injectable } from '@nestjs/common';
import type { ModelStateReport } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { LOGGER } from '../../platform/tokens.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { DeviceWriteBatcher } from './device-writes.js';
import { IngestStats } from './ingest-stats.js';

/**
 * [P-3.5] Model-state snapshots: the device's rows become exactly the snapshot (models missing from it are gone),
 * a snapshot older than the one held is ignored, and each model whose state changed is emitted (after the commit).
 * The rows are written by the DeviceWriteBatcher, with other devices' writes in one transaction.
 */
@Injectable()
export class ModelStateService {
  private readonly snapshotTs = new Map<string, number>();

  constructor(
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly events: FleetEvents,
    private readonly stats: IngestStats,
    private readonly writes: DeviceWriteBatcher,
  ) {}

  async report(deviceId: string, report: ModelStateReport): Promise<void> {
    const held = this.snapshotTs.get(deviceId);
    if (held !== undefined && report.ts < held) {
      this.stats.staleModelStates += 1;
      return;
    }
    this.snapshotTs.set(deviceId, report.ts);
    const changes = await this.writes.modelState(deviceId, report);
    if (!changes) {
      this.logger.warn({ deviceId }, 'model state of an unknown device ignored');
      return;
    }
    for (const change of changes) {
      // modelId carries the model name: devices report by name, and may hold models no longer in the catalog.
      this.events.emit('model-state.changed', { deviceId, modelId: change.name, state: change.state, at: change.at.toISOString() });
    }
  }
}
