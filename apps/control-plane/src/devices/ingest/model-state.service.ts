import { Inject, Injectable } from '@nestjs/common';
import type { ModelStateReport, ModelStatus } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../../platform/tokens.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { ModelState, Prisma } from '../../generated/prisma/client.js';
import { IngestStats } from './ingest-stats.js';

type Row = Omit<Prisma.ModelStateUncheckedCreateInput, 'deviceId'>;

/** The stored columns of one reported model. */
function rowOf(model: ModelStatus): Row {
  return {
    modelName: model.name,
    sha256: model.sha256,
    state: model.state,
    loaded: model.state === 'ready' && model.loaded,
    progress: model.state === 'downloading' && model.totalBytes > 0 ? Math.min(1, model.receivedBytes / model.totalBytes) : null,
    receivedBytes: model.state === 'downloading' ? BigInt(model.receivedBytes) : null,
    totalBytes: model.state === 'downloading' ? BigInt(model.totalBytes) : null,
    errorCode: model.state === 'failed' ? model.code : null,
    errorMessage: model.state === 'failed' ? model.message : null,
    desiredVersion: model.desiredVersion,
    updatedAt: new Date(model.since),
  };
}

function sameRow(held: ModelState, row: Row): boolean {
  return (
    held.sha256 === row.sha256 &&
    held.state === row.state &&
    held.loaded === row.loaded &&
    held.progress === row.progress &&
    held.receivedBytes === row.receivedBytes &&
    held.totalBytes === row.totalBytes &&
    held.errorCode === row.errorCode &&
    held.errorMessage === row.errorMessage &&
    held.desiredVersion === row.desiredVersion &&
    held.updatedAt.getTime() === (row.updatedAt as Date).getTime()
  );
}

/**
 * [P-3.5] Model-state snapshots: the device's rows become exactly the snapshot (models missing from it are gone),
 * a snapshot older than the one held is ignored, and each model whose state changed is emitted.
 */
@Injectable()
export class ModelStateService {
  private readonly snapshotTs = new Map<string, number>();

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly events: FleetEvents,
    private readonly stats: IngestStats,
  ) {}

  async report(deviceId: string, report: ModelStateReport): Promise<void> {
    const held = this.snapshotTs.get(deviceId);
    if (held !== undefined && report.ts < held) {
      this.stats.staleModelStates += 1;
      return;
    }
    this.snapshotTs.set(deviceId, report.ts);
    const rows = new Map(report.models.map((m) => [m.name, rowOf(m)]));
    const changes = await this.db.prisma.$transaction(async (tx) => {
      const device = await tx.device.findUnique({ where: { id: deviceId }, select: { reportedDesiredVersion: true } });
      if (!device) return null;
      const before = new Map((await tx.modelState.findMany({ where: { deviceId } })).map((r) => [r.modelName, r]));
      const changed: { name: string; state: string; at: Date }[] = [];
      const gone = [...before.keys()].filter((name) => !rows.has(name));
      if (gone.length > 0) {
        await tx.modelState.deleteMany({ where: { deviceId, modelName: { in: gone } } });
        for (const name of gone) changed.push({ name, state: 'removed', at: new Date(report.ts) });
      }
      for (const [name, row] of rows) {
        const previous = before.get(name);
        if (previous && sameRow(previous, row)) continue;
        await tx.modelState.upsert({
          where: { deviceId_modelName: { deviceId, modelName: name } },
          create: { ...row, deviceId },
          update: row,
        });
        if (!previous || previous.state !== row.state || previous.loaded !== row.loaded) {
          changed.push({ name, state: row.state, at: row.updatedAt as Date });
        }
      }
      if (device.reportedDesiredVersion !== report.desiredVersion) {
        await tx.device.update({ where: { id: deviceId }, data: { reportedDesiredVersion: report.desiredVersion } });
      }
      return changed;
    });
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
