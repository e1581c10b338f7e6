import { Inject, Injectable, type OnApplicationShutdown, type OnModuleDestroy } from '@nestjs/common';
import type { Hello, ModelStateReport, ModelStatus } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../../platform/tokens.js';
import type { Database } from '../../platform/database/index.js';
import { Prisma, type DeviceStatus, type ModelStateName } from '../../generated/prisma/client.js';
import { chunkRows, chunkedStatements } from '../../platform/database/bulk.js';
import { isTransientDatabaseError, retryTransient } from '../../platform/database/retry.js';
import { IngestStats } from './ingest-stats.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from './device-ingest.settings.js';

type TransactionClient = Prisma.TransactionClient;

/** What a guard sees of the stored device (as earlier writes of the same batch left it). */
export interface GuardRow {
  status: DeviceStatus;
  sessionId: string | null;
  lastSeenAt: Date | null;
}

export interface HelloOutcome {
  previous: DeviceStatus;
  next: DeviceStatus;
  /** device fields the hello changed (labels, hardware) */
  fields: string[];
  /** the stored outbox cursor, read in the same transaction */
  cursor: number;
}

export interface StatusWrite {
  next: DeviceStatus;
  reason: string;
  /** the write is skipped (applied: false) when this rejects the stored row */
  guard?: (row: GuardRow) => boolean;
  sessionId?: string;
  lastSeenAt?: Date;
}

export interface StatusOutcome {
  applied: boolean;
  /** the stored status before this write */
  previous: DeviceStatus;
  /** the stored status and session after it */
  status: DeviceStatus;
  sessionId: string | null;
}

export interface ModelStateChange {
  name: string;
  state: string;
  at: Date;
}

type Op =
  | { kind: 'hello'; deviceId: string; hello: Hello; receivedAt: number }
  | { kind: 'status'; deviceId: string; write: StatusWrite }
  | { kind: 'modelState'; deviceId: string; report: ModelStateReport };

interface Pending {
  op: Op;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  /** its "kept, retried later" line was logged: once per write */
  deferredLogged: boolean;
}

interface DeviceState {
  row: GuardRow & {
    labels: Record<string, string>;
    hardware: unknown;
    agentVersion: string | null;
    reportedDesiredVersion: number;
  };
  /** the columns to write (unset: unchanged) */
  set: {
    status?: DeviceStatus;
    sessionId?: string;
    lastSeenAt?: Date;
    hardware?: unknown;
    labels?: Record<string, string>;
    agentVersion?: string;
    reportedDesiredVersion?: number;
  };
  touched: boolean;
}

type ModelRow = Omit<Prisma.ModelStateUncheckedCreateInput, 'deviceId' | 'updatedAt'> & { updatedAt: Date; state: ModelStateName };

interface ModelStates {
  /** as stored before the batch */
  stored: Map<string, ModelRow>;
  /** as the batch's snapshots leave them */
  current: Map<string, ModelRow>;
  /** names whose row the batch wrote (upserted, if still present at the end) */
  written: Set<string>;
}

const LABEL_KEY = /^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$/;

/** Agent-local labels [P-3.1] fill keys the control plane does not set; returns the merged labels when they changed. */
export function mergeAgentLabels(labels: Record<string, string>, agent: Record<string, string> | undefined): Record<string, string> | null {
  if (!agent) return null;
  let merged: Record<string, string> | null = null;
  for (const [key, value] of Object.entries(agent)) {
    if (key in labels || !LABEL_KEY.test(key) || value.length > 128) continue;
    merged ??= { ...labels };
    merged[key] = value;
  }
  return merged;
}

/** The stored columns of one reported model. */
function rowOf(model: ModelStatus): ModelRow {
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

function sameRow(held: ModelRow, row: ModelRow): boolean {
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
    held.updatedAt.getTime() === row.updatedAt.getTime()
  );
}

const iso = (date: Date | undefined) => (date ? date.toISOString() : null);
const json = (value: unknown) => (value === undefined ? null : JSON.stringify(value));

/**
 * Write-behind for the device writes of MQTT messages (hello, status, model state, disconnect/offline) [issue 11]:
 * instead of a transaction per message on a small pool, writes arriving within `deviceWriteWindowMs` (or up to
 * `deviceWriteBatch` of them) go to the database in one transaction of chunked multi-row statements, one batch at a
 * time. A caller's promise resolves after the commit with what its write did, so events still follow durable writes,
 * in the order the writes were submitted. Writes of one device in one batch apply in order against the row as the
 * earlier ones left it; the device row is written once with the last values (coalesced), while every status change
 * keeps its history row. A transient failure (busy pool: P2028, lost connection) is retried with backoff; past the
 * retries the writes are kept, logged once each with the device id, and retried later: never dropped.
 */
@Injectable()
export class DeviceWriteBatcher implements OnModuleDestroy, OnApplicationShutdown {
  private pending: Pending[] = [];
  private timer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private stopping = false;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(REGISTRY_SETTINGS) private readonly settings: RegistrySettings,
    private readonly stats: IngestStats,
  ) {}

  /** [P-3.1] inventory, agent version, last seen, the new session; online unless draining. Null: unknown or revoked. */
  hello(deviceId: string, hello: Hello, receivedAt: number): Promise<HelloOutcome | null> {
    return this.submit<HelloOutcome | null>({ kind: 'hello', deviceId, hello, receivedAt });
  }

  /** Sets a status (with its history row) unless the device is revoked or the guard refuses. Null: unknown device. */
  status(deviceId: string, write: StatusWrite): Promise<StatusOutcome | null> {
    return this.submit<StatusOutcome | null>({ kind: 'status', deviceId, write });
  }

  /** [P-3.5] The device's model rows become exactly the snapshot. Returns the models whose state changed; null: unknown device. */
  modelState(deviceId: string, report: ModelStateReport): Promise<ModelStateChange[] | null> {
    return this.submit<ModelStateChange[] | null>({ kind: 'modelState', deviceId, report });
  }

  /** Resolves when everything submitted so far is written (or failed for good). */
  async idle(): Promise<void> {
    while (this.pending.length > 0 || this.draining) {
      this.start();
      await this.draining;
    }
  }

  /**
   * Writes what is pending. From now on a write that still fails for a transient reason after its retries is
   * rejected (its caller logs it) instead of kept: a database that stays away must not hold the shutdown forever.
   */
  async onModuleDestroy(): Promise<void> {
    this.stopping = true;
    await this.idle();
  }

  async onApplicationShutdown(): Promise<void> {
    this.stopping = true;
    await this.idle();
  }

  private submit<T>(op: Op): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ op, resolve: resolve as (value: unknown) => void, reject, deferredLogged: false });
      if (this.pending.length >= this.settings.deviceWriteBatch) this.start();
      else this.timer ??= setTimeout(() => this.start(), this.settings.deviceWriteWindowMs);
    });
  }

  /** One drain at a time: writes batch after batch while any are pending; never rejects. */
  private start(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.draining) return;
    this.draining = this.drain()
      .catch((error: unknown) => this.logger.error({ err: error }, 'device write batcher failed'))
      .finally(() => {
      this.draining = undefined;
      // submitted while the last batch was being written but not picked up: the window starts again
      if (this.pending.length > 0) this.timer ??= setTimeout(() => this.start(), this.settings.deviceWriteWindowMs);
    });
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.settings.deviceWriteBatch);
      try {
        await this.writeBatch(batch);
      } catch (error) {
        // writeBatch settles every write itself; this only guards against a bug leaving one hanging
        for (const p of batch) p.reject(error);
      }
    }
  }

  private async writeBatch(batch: Pending[]): Promise<void> {
    let results: unknown[];
    try {
      results = await this.transaction(batch.map((p) => p.op));
    } catch (error) {
      if (isTransientDatabaseError(error)) return this.defer(batch, error);
      // Not the database's state but one write (a bug, a constraint): alone, the others go through.
      this.logger.warn({ err: error, writes: batch.length }, 'device write batch failed; writing one by one');
      for (const p of batch) {
        try {
          const [result] = await this.transaction([p.op]);
          p.resolve(result);
        } catch (single) {
          if (isTransientDatabaseError(single)) await this.defer([p], single);
          else p.reject(single);
        }
      }
      return;
    }
    this.stats.deviceWriteBatches += 1;
    this.stats.deviceWrites += batch.length;
    // in submission order: each caller's continuation (its events) runs in that order
    for (const [index, p] of batch.entries()) p.resolve(results[index]);
  }

  /** Retried and still failing for a reason that passes: kept at the head of the queue and written later. */
  private async defer(batch: Pending[], error: unknown): Promise<void> {
    if (this.stopping) {
      for (const p of batch) p.reject(error);
      return;
    }
    this.stats.deviceWritesDeferred += batch.length;
    for (const p of batch) {
      if (p.deferredLogged) continue;
      p.deferredLogged = true;
      this.logger.error({ err: error, deviceId: p.op.deviceId, write: p.op.kind }, 'device write not stored yet (database busy or away): kept, retried later');
    }
    this.pending.unshift(...batch);
    await new Promise((resolve) => setTimeout(resolve, this.settings.deviceWriteDeferMs));
  }

  private transaction(ops: Op[]): Promise<unknown[]> {
    return retryTransient(() => this.db.prisma.$transaction((tx) => this.apply(tx, ops), { timeout: 60_000 }), {
      attempts: this.settings.deviceWriteAttempts,
      baseDelayMs: 100,
      onRetry: (error, attempt) => {
        this.stats.deviceWriteRetries += 1;
        this.logger.warn({ err: error, attempt, writes: ops.length }, 'device write batch could not be committed; retrying');
      },
    });
  }

  /** Reads what the batch needs, applies every write in order in memory, then writes the result in a few statements. */
  private async apply(tx: TransactionClient, ops: Op[]): Promise<unknown[]> {
    const ids = [...new Set(ops.map((op) => op.deviceId))];
    const devices = new Map<string, DeviceState>();
    for (const chunk of chunkRows(ids, 1)) {
      const rows = await tx.device.findMany({
        where: { id: { in: chunk } },
        select: { id: true, status: true, sessionId: true, lastSeenAt: true, labels: true, hardware: true, agentVersion: true, reportedDesiredVersion: true },
      });
      for (const { id, labels, ...row } of rows) devices.set(id, { row: { ...row, labels: labels as Record<string, string> }, set: {}, touched: false });
    }
    const helloIds = [...new Set(ops.filter((op) => op.kind === 'hello').map((op) => op.deviceId))];
    const cursors = new Map<string, number>();
    for (const chunk of chunkRows(helloIds, 1)) {
      for (const c of await tx.deviceOutboxCursor.findMany({ where: { deviceId: { in: chunk } } })) cursors.set(c.deviceId, Number(c.lastAckedSeq));
    }
    const modelIds = [...new Set(ops.filter((op) => op.kind === 'modelState' && devices.has(op.deviceId)).map((op) => op.deviceId))];
    const models = new Map<string, ModelStates>(modelIds.map((id) => [id, { stored: new Map(), current: new Map(), written: new Set() }]));
    for (const chunk of chunkRows(modelIds, 1)) {
      for (const { deviceId, ...row } of await tx.modelState.findMany({ where: { deviceId: { in: chunk } } })) {
        const held = models.get(deviceId);
        held?.stored.set(row.modelName, row);
        held?.current.set(row.modelName, row);
      }
    }

    const history: Prisma.DeviceStatusChangeCreateManyInput[] = [];
    const results = ops.map((op) => {
      const device = devices.get(op.deviceId);
      switch (op.kind) {
        case 'hello':
          return device ? applyHello(device, op.hello, op.receivedAt, cursors.get(op.deviceId) ?? 0, (previous, next) => history.push({ deviceId: op.deviceId, status: next, previous, reason: 'hello' })) : null;
        case 'status':
          return device ? applyStatus(device, op.write, (previous, next) => history.push({ deviceId: op.deviceId, status: next, previous, reason: op.write.reason })) : null;
        case 'modelState': {
          const held = models.get(op.deviceId);
          return device && held ? applyModelState(device, held, op.report) : null;
        }
      }
    });

    await this.writeDevices(tx, devices);
    for (const chunk of chunkRows(history, 6)) await tx.deviceStatusChange.createMany({ data: chunk });
    await this.writeModelStates(tx, models);
    return results;
  }

  /** One UPDATE per chunk: a NULL column leaves the stored value (every column written here is set non-null). */
  private async writeDevices(tx: TransactionClient, devices: Map<string, DeviceState>): Promise<void> {
    const rows: Prisma.Sql[] = [];
    for (const [id, { set, touched }] of devices) {
      if (!touched) continue;
      rows.push(
        Prisma.sql`(${id}, ${set.status ?? null}::"device_status", ${set.sessionId ?? null}::text, ${iso(set.lastSeenAt)}::timestamp(3),
          ${json(set.hardware)}::jsonb, ${json(set.labels)}::jsonb, ${set.agentVersion ?? null}::text, ${set.reportedDesiredVersion ?? null}::integer)`,
      );
    }
    if (rows.length === 0) return;
    const now = new Date().toISOString();
    const statements = chunkedStatements(
      rows,
      (values) => Prisma.sql`UPDATE "devices" AS d SET
        "status" = COALESCE(v.status, d."status"),
        "session_id" = COALESCE(v.session_id, d."session_id"),
        "last_seen_at" = COALESCE(v.last_seen_at, d."last_seen_at"),
        "hardware" = COALESCE(v.hardware, d."hardware"),
        "labels" = COALESCE(v.labels, d."labels"),
        "agent_version" = COALESCE(v.agent_version, d."agent_version"),
        "reported_desired_version" = COALESCE(v.reported_desired_version, d."reported_desired_version"),
        "updated_at" = ${now}::timestamp(3)
      FROM (VALUES ${values}) AS v(id, status, session_id, last_seen_at, hardware, labels, agent_version, reported_desired_version)
      WHERE d."id" = v.id`,
    );
    for (const statement of statements) await tx.$executeRaw(statement);
  }

  private async writeModelStates(tx: TransactionClient, models: Map<string, ModelStates>): Promise<void> {
    const gone: Prisma.Sql[] = [];
    const upserts: Prisma.Sql[] = [];
    for (const [deviceId, { stored, current, written }] of models) {
      for (const name of stored.keys()) if (!current.has(name)) gone.push(Prisma.sql`(${deviceId}, ${name})`);
      for (const name of written) {
        const r = current.get(name);
        if (!r) continue;
        upserts.push(
          Prisma.sql`(${deviceId}, ${name}, ${r.sha256 ?? null}::text, ${r.state}::"model_state_name", ${r.loaded ?? false}::boolean,
            ${r.progress ?? null}::double precision, ${r.receivedBytes ?? null}::bigint, ${r.totalBytes ?? null}::bigint,
            ${r.errorCode ?? null}::text, ${r.errorMessage ?? null}::text, ${r.desiredVersion ?? 0}::integer, ${r.updatedAt.toISOString()}::timestamp(3))`,
        );
      }
    }
    const deletes = chunkedStatements(gone, (values) => Prisma.sql`DELETE FROM "model_states" WHERE ("device_id", "model_name") IN (VALUES ${values})`);
    for (const statement of deletes) await tx.$executeRaw(statement);
    const inserts = chunkedStatements(
      upserts,
      (values) => Prisma.sql`INSERT INTO "model_states" ("device_id", "model_name", "sha256", "state", "loaded", "progress", "received_bytes",
        "total_bytes", "error_code", "error_message", "desired_version", "updated_at") VALUES ${values}
      ON CONFLICT ("device_id", "model_name") DO UPDATE SET "sha256" = EXCLUDED."sha256", "state" = EXCLUDED."state",
        "loaded" = EXCLUDED."loaded", "progress" = EXCLUDED."progress", "received_bytes" = EXCLUDED."received_bytes",
        "total_bytes" = EXCLUDED."total_bytes", "error_code" = EXCLUDED."error_code", "error_message" = EXCLUDED."error_message",
        "desired_version" = EXCLUDED."desired_version", "updated_at" = EXCLUDED."updated_at"`,
    );
    for (const statement of inserts) await tx.$executeRaw(statement);
  }
}

function setStatus(device: DeviceState, next: DeviceStatus, changed: (previous: DeviceStatus, next: DeviceStatus) => void): void {
  const previous = device.row.status;
  device.touched = true;
  if (previous === next) return;
  device.row.status = next;
  device.set.status = next;
  changed(previous, next);
}

function applyHello(
  device: DeviceState,
  hello: Hello,
  receivedAt: number,
  cursor: number,
  changed: (previous: DeviceStatus, next: DeviceStatus) => void,
): HelloOutcome | null {
  const { row, set } = device;
  if (row.status === 'revoked') return null;
  const previous = row.status;
  const next: DeviceStatus = previous === 'draining' ? 'draining' : 'online';
  const labels = mergeAgentLabels(row.labels, hello.labels);
  const hardware = { ...hello.hardware, runtimes: hello.runtimes, modelsOnDisk: hello.models };
  const hardwareChanged = JSON.stringify(row.hardware) !== JSON.stringify(hardware);
  if (hardwareChanged) row.hardware = set.hardware = hardware;
  if (labels) row.labels = set.labels = labels;
  row.agentVersion = set.agentVersion = hello.agentVersion;
  row.lastSeenAt = set.lastSeenAt = new Date(receivedAt);
  row.sessionId = set.sessionId = hello.sessionId;
  setStatus(device, next, changed);
  return { previous, next, fields: [...(labels ? ['labels'] : []), ...(hardwareChanged ? ['hardware'] : [])], cursor };
}

function applyStatus(device: DeviceState, write: StatusWrite, changed: (previous: DeviceStatus, next: DeviceStatus) => void): StatusOutcome {
  const { row, set } = device;
  const previous = row.status;
  if (row.status === 'revoked' || (write.guard && !write.guard({ status: row.status, sessionId: row.sessionId, lastSeenAt: row.lastSeenAt }))) {
    return { applied: false, previous, status: row.status, sessionId: row.sessionId };
  }
  if (write.sessionId !== undefined) row.sessionId = set.sessionId = write.sessionId;
  if (write.lastSeenAt !== undefined) row.lastSeenAt = set.lastSeenAt = write.lastSeenAt;
  if (row.status !== write.next || write.sessionId !== undefined || write.lastSeenAt !== undefined) setStatus(device, write.next, changed);
  return { applied: true, previous, status: row.status, sessionId: row.sessionId };
}

function applyModelState(device: DeviceState, held: ModelStates, report: ModelStateReport): ModelStateChange[] {
  const rows = new Map(report.models.map((m) => [m.name, rowOf(m)]));
  const changes: ModelStateChange[] = [];
  for (const name of [...held.current.keys()]) {
    if (rows.has(name)) continue;
    held.current.delete(name);
    held.written.delete(name);
    changes.push({ name, state: 'removed', at: new Date(report.ts) });
  }
  for (const [name, row] of rows) {
    const previous = held.current.get(name);
    if (previous && sameRow(previous, row)) continue;
    held.current.set(name, row);
    held.written.add(name);
    if (!previous || previous.state !== row.state || previous.loaded !== row.loaded) changes.push({ name, state: row.state, at: row.updatedAt });
  }
  if (device.row.reportedDesiredVersion !== report.desiredVersion) {
    device.row.reportedDesiredVersion = device.set.reportedDesiredVersion = report.desiredVersion;
    device.touched = true;
  }
  return changes;
}
