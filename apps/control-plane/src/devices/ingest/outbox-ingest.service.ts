import { Inject, Injectable, type OnApplicationShutdown, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { encode, topics, type DeviceEvent, type Telemetry, type UsageRecord } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../../platform/tokens.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { Prisma } from '../../generated/prisma/client.js';
import { IngestStats, type OutboxKind } from './ingest-stats.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from './device-ingest.settings.js';
import { TelemetryCache } from './telemetry-cache.js';
import { RollupAccumulator, rollupUpsertSql } from './telemetry-rollups.js';
import { chunkRows, chunkedStatements } from '../../platform/database/bulk.js';
import { isTransientDatabaseError, retryTransient } from '../../platform/database/retry.js';

type Entry =
  | { kind: 'telemetry'; seq: number; value: Telemetry; receivedAt: number }
  | { kind: 'event'; seq: number; value: DeviceEvent; receivedAt: number }
  | { kind: 'usage'; seq: number; value: UsageRecord; receivedAt: number };

/** An entry with `prev`: the agent holds nothing between prev and seq [P-4.3]. */
type Buffered = Entry & { prev: number };

interface DeviceCommit {
  upToSeq: number;
  telemetry: Telemetry[];
  events: DeviceEvent[];
  receivedAt: number[];
  /** entries above a missing one the agent may still send: kept until it comes */
  waiting: Buffered[];
}

type TransactionClient = Prisma.TransactionClient;

/** Bind parameters per row of `createMany`: an upper bound (every column of device_events / inference_requests, id included). */
const EVENT_COLUMNS = 12;
const USAGE_COLUMNS = 18;

/**
 * Agent outbox entries (telemetry, events, usage) [P-4]: buffered in memory and written in one transaction per flush
 * (every `flushIntervalMs` or `flushEntries`), never one write per message. Duplicates are dropped by seq against the
 * per-device cursor, which advances in the same transaction, so a resend after any crash is stored exactly once.
 * `outbox/ack` goes out only after the commit [P-4.2]: the broker's PUBACK comes before our code runs (FACTS).
 *
 * The cursor moves only over entries stored or ones the agent says it no longer holds (`prevSeq`, [P-4.3]): an entry
 * whose predecessor is missing waits in `held` until the predecessor comes (a resend), so a late entry is stored,
 * never skipped as a duplicate. When this process lets go of an entry before storing it (full buffer, failed
 * write), its next ack asks the agent to resend.
 */
@Injectable()
export class OutboxIngestService implements OnModuleInit, OnModuleDestroy, OnApplicationShutdown {
  /** arrivals since the last flush */
  private buffer = new Map<string, Map<number, Buffered>>();
  private buffered = 0;
  /** entries whose predecessor has not arrived yet, by device */
  private readonly held = new Map<string, Map<number, Buffered>>();
  private heldCount = 0;
  /** devices that must resend everything after their ack: this process dropped some of their entries unstored */
  private readonly resendWanted = new Set<string>();
  /** committed cursor per device, as far as this process knows */
  private readonly acked = new Map<string, number>();
  private readonly lastAckAt = new Map<string, number>();
  private readonly ackTimers = new Map<string, NodeJS.Timeout>();
  private exclusiveTail: Promise<unknown> = Promise.resolve();
  private flushQueued = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(REGISTRY_SETTINGS) private readonly settings: RegistrySettings,
    private readonly stats: IngestStats,
    private readonly events: FleetEvents,
    private readonly telemetryCache: TelemetryCache,
  ) {}

  onModuleInit(): void {
    this.timer = setInterval(() => {
      if (this.buffered > 0) this.flushInBackground();
    }, this.settings.flushIntervalMs);
    this.timer.unref();
  }

  /** Writes what is buffered and sends the last acks while the broker and database are still open. */
  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.flush();
    for (const [deviceId, timer] of this.ackTimers) {
      clearTimeout(timer);
      this.ackTimers.delete(deviceId);
      this.publishAck(deviceId);
    }
  }

  onApplicationShutdown(): void {
    for (const timer of this.ackTimers.values()) clearTimeout(timer);
    this.ackTimers.clear();
  }

  /** Takes one decoded entry; the caller runs it in the device's queue (after that device's hello). */
  accept(deviceId: string, entry: Entry): void {
    const acked = this.acked.get(deviceId);
    if (acked !== undefined && entry.seq <= acked) {
      // [P-4.3] already stored: the agent missed our ack, so repeat it
      this.stats.duplicates += 1;
      this.scheduleAck(deviceId);
      return;
    }
    // [P-4.3] absent (or nonsensical) prevSeq: the agent vouches for no gap
    const prev = Math.min(entry.value.prevSeq ?? entry.seq - 1, entry.seq - 1);
    const known = this.buffer.get(deviceId)?.get(entry.seq) ?? this.held.get(deviceId)?.get(entry.seq);
    if (known) {
      // A resend may vouch for a longer gap (the agent dropped entries since): what it says last is true.
      known.prev = Math.min(known.prev, prev);
      this.stats.duplicates += 1;
      return;
    }
    if (this.buffered + this.heldCount >= this.settings.maxBufferedEntries) {
      // Backpressure instead of unbounded memory: not acknowledged, so the agent keeps it; asked to resend it.
      this.stats.overflowDropped += 1;
      this.resendWanted.add(deviceId);
      return;
    }
    let entries = this.buffer.get(deviceId);
    if (!entries) {
      entries = new Map();
      this.buffer.set(deviceId, entries);
    }
    entries.set(entry.seq, { ...entry, prev });
    this.buffered += 1;
    this.stats.buffered = this.buffered + this.heldCount;
    if (this.buffered >= this.settings.flushEntries) this.flushInBackground();
  }

  private flushInBackground(): void {
    this.flush().catch((error: unknown) => this.logger.error({ err: error }, 'outbox flush failed'));
  }

  /**
   * [P-1.6][P-4.2][P-4.4] After a hello: load the device's cursor, reset it when the agent's lastSeq is below it (the
   * agent lost its outbox), and always publish an ack with the current value so an agent whose ack was lost learns it.
   * `stored` is the cursor the hello's own (batched) write read: then the usual case needs no database round trip and
   * does not wait behind flushes (issue 11, cause 2); only a reset, which must not interleave with a flush, queues
   * on the flush chain.
   */
  onHello(deviceId: string, lastSeq: number, sessionId?: string, stored?: number): Promise<number> {
    if (stored !== undefined) {
      // a flush that committed since the hello's read moved the cursor on: the higher one is stored
      const acked = Math.max(stored, this.acked.get(deviceId) ?? 0);
      if (lastSeq >= acked) {
        this.acked.set(deviceId, acked);
        this.publishAck(deviceId, sessionId);
        return Promise.resolve(acked);
      }
    }
    return this.exclusive(async () => {
      const cursor = await this.db.prisma.deviceOutboxCursor.findUnique({ where: { deviceId } });
      let acked = Number(cursor?.lastAckedSeq ?? 0n);
      if (lastSeq < acked) {
        await retryTransient(() =>
          this.db.prisma.$transaction(async (tx) => {
            await tx.deviceOutboxCursor.update({ where: { deviceId }, data: { lastAckedSeq: BigInt(lastSeq) } });
            await tx.deviceEvent.create({
              data: {
                deviceId,
                seq: null,
                at: new Date(),
                level: 'warn',
                code: 'OUTBOX_RESET',
                message: `agent outbox restarted at seq ${lastSeq}, below the acknowledged seq ${acked}`,
                details: { lastSeq, ackedSeq: acked },
              },
            });
          }),
        );
        // Buffered entries came from the lost store; their seqs now mean something else.
        this.buffered -= this.buffer.get(deviceId)?.size ?? 0;
        this.heldCount -= this.held.get(deviceId)?.size ?? 0;
        this.buffer.delete(deviceId);
        this.held.delete(deviceId);
        this.stats.buffered = this.buffered + this.heldCount;
        this.logger.warn({ deviceId, lastSeq, ackedSeq: acked }, 'agent outbox reset: cursor moved back [P-4.4]');
        acked = lastSeq;
      }
      this.acked.set(deviceId, acked);
      // Names the hello it answers: the agent takes the CP's clock from it [P-3.6].
      this.publishAck(deviceId, sessionId);
      return acked;
    });
  }

  /** The stored cursor this process knows for a device (undefined before its first hello or flush). */
  ackedSeq(deviceId: string): number | undefined {
    return this.acked.get(deviceId);
  }

  /** Writes everything buffered now (also called by the timer and when `flushEntries` is reached). */
  flush(): Promise<void> {
    if (this.flushQueued) return this.exclusiveTail.then(() => undefined);
    this.flushQueued = true;
    return this.exclusive(async () => {
      this.flushQueued = false;
      await this.flushNow();
    });
  }

  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const result = this.exclusiveTail.then(task);
    this.exclusiveTail = result.catch(() => undefined);
    return result;
  }

  private async flushNow(): Promise<void> {
    if (this.buffered === 0) return;
    const batch = this.buffer;
    this.buffer = new Map();
    this.buffered = 0;
    // Entries waiting for a predecessor get another chance with their device's new arrivals.
    for (const [deviceId, entries] of batch) {
      const waiting = this.held.get(deviceId);
      if (!waiting) continue;
      this.held.delete(deviceId);
      this.heldCount -= waiting.size;
      for (const [seq, entry] of waiting) {
        const fresh = entries.get(seq);
        if (fresh) fresh.prev = Math.min(fresh.prev, entry.prev);
        else entries.set(seq, entry);
      }
    }
    this.stats.buffered = this.heldCount;
    const started = Date.now();
    if (this.settings.testCommitHoldMs > 0) await this.holdForTest(batch);
    // Bounded transactions: a buffer grown past one (a storm, a slow database) is written in several, in turn.
    const committed = new Map<string, DeviceCommit>();
    for (const part of splitBatch(batch, this.settings.flushTransactionEntries)) {
      for (const [deviceId, commit] of await this.writePart(part)) committed.set(deviceId, commit);
    }
    const now = Date.now();
    this.stats.flushes += 1;
    this.stats.lastFlushMs = now - started;
    let lag = 0;
    for (const [deviceId, commit] of committed) {
      const known = this.acked.get(deviceId) ?? 0;
      this.acked.set(deviceId, Math.max(known, commit.upToSeq));
      for (const receivedAt of commit.receivedAt) lag = Math.max(lag, now - receivedAt);
      this.hold(deviceId, commit.waiting);
      this.scheduleAck(deviceId);
      if (commit.telemetry.length > 0) {
        let newest = commit.telemetry[0] as Telemetry;
        for (const sample of commit.telemetry) if (sample.ts >= newest.ts) newest = sample;
        this.telemetryCache.offer(deviceId, newest, now);
        this.events.emit('device.telemetry', { deviceId, at: new Date(newest.ts).toISOString() });
      }
      for (const event of commit.events) {
        this.events.emit('device.event', {
          deviceId,
          seq: event.seq,
          level: event.level,
          code: event.code,
          message: event.message,
          at: new Date(event.ts).toISOString(),
        });
      }
    }
    this.stats.lastFlushLagMs = lag;
    this.stats.buffered = this.buffered + this.heldCount;
    for (const deviceId of this.resendWanted) this.scheduleAck(deviceId);
  }

  /** One transaction (retried on transient errors); on any other failure device by device, so one cannot block the rest. */
  private async writePart(part: Map<string, Map<number, Buffered>>): Promise<Map<string, DeviceCommit>> {
    const write = (entries: Map<string, Map<number, Buffered>>) =>
      retryTransient(() => this.db.prisma.$transaction((tx) => this.write(tx, entries), { timeout: 60_000 }), {
        onRetry: (error, attempt) => this.logger.warn({ err: error, attempt, devices: entries.size }, 'outbox flush could not be committed; retrying'),
      });
    try {
      return await write(part);
    } catch (error) {
      this.stats.flushFailures += 1;
      if (isTransientDatabaseError(error)) {
        // The database is busy or away: nothing was stored, nothing acknowledged; the agents resend [P-4.3].
        for (const deviceId of part.keys()) this.resendWanted.add(deviceId);
        this.logger.error({ err: error, devices: part.size }, 'outbox flush not stored (database busy or away); the devices are asked to resend');
        return new Map();
      }
      this.logger.error({ err: error, devices: part.size }, 'outbox flush failed; retrying per device');
      const committed = new Map<string, DeviceCommit>();
      for (const [deviceId, entries] of part) {
        try {
          const one = await write(new Map([[deviceId, entries]]));
          for (const [id, commit] of one) committed.set(id, commit);
        } catch (deviceError) {
          this.stats.flushFailures += 1;
          // Not acknowledged: the agent keeps the entries; the next ack asks for them again [P-4.3].
          this.resendWanted.add(deviceId);
          this.logger.error({ err: deviceError, deviceId, entries: entries.size }, 'outbox entries of a device could not be stored');
        }
      }
      return committed;
    }
  }

  private hold(deviceId: string, waiting: readonly Buffered[]): void {
    if (waiting.length === 0) return;
    let entries = this.held.get(deviceId);
    if (!entries) {
      entries = new Map();
      this.held.set(deviceId, entries);
    }
    for (const entry of waiting) {
      if (!entries.has(entry.seq)) this.heldCount += 1;
      entries.set(entry.seq, entry);
    }
  }

  /** Test seam (FLOTILLA_TEST_OUTBOX_COMMIT_HOLD_MS): the batch is PUBACKed, not committed, while this waits. */
  private async holdForTest(batch: Map<string, Map<number, Buffered>>): Promise<void> {
    const devices = [...batch].map(([deviceId, entries]) => {
      const kinds: Record<OutboxKind, number> = { telemetry: 0, event: 0, usage: 0 };
      for (const entry of entries.values()) kinds[entry.kind] += 1;
      return { deviceId, seqs: [...entries.keys()].sort((a, b) => a - b), kinds };
    });
    this.logger.warn({ holdMs: this.settings.testCommitHoldMs, devices }, 'test seam: holding the outbox commit');
    await new Promise((resolve) => setTimeout(resolve, this.settings.testCommitHoldMs));
  }

  /** One transaction: filter by the stored cursors, write rollups, events, usage, then advance the cursors. */
  private async write(tx: TransactionClient, batch: Map<string, Map<number, Buffered>>): Promise<Map<string, DeviceCommit>> {
    const ids = [...batch.keys()];
    const existing = new Set((await tx.device.findMany({ where: { id: { in: ids } }, select: { id: true } })).map((d) => d.id));
    const cursors = new Map(
      (await tx.deviceOutboxCursor.findMany({ where: { deviceId: { in: ids } } })).map((c) => [c.deviceId, Number(c.lastAckedSeq)]),
    );
    const rollups = new RollupAccumulator(this.settings);
    const events: Prisma.DeviceEventCreateManyInput[] = [];
    const usage: Prisma.InferenceRequestCreateManyInput[] = [];
    const counts: Record<OutboxKind, number> = { telemetry: 0, event: 0, usage: 0 };
    const result = new Map<string, DeviceCommit>();

    for (const [deviceId, entries] of batch) {
      if (!existing.has(deviceId)) {
        this.logger.warn({ deviceId, entries: entries.size }, 'outbox entries from an unknown device dropped');
        continue;
      }
      const stored = cursors.get(deviceId) ?? 0;
      const commit: DeviceCommit = { upToSeq: stored, telemetry: [], events: [], receivedAt: [], waiting: [] };
      result.set(deviceId, commit);
      const sorted = [...entries.values()].sort((a, b) => a.seq - b.seq);
      for (const [index, entry] of sorted.entries()) {
        if (entry.seq <= commit.upToSeq) {
          this.stats.duplicates += 1;
          continue;
        }
        if (entry.prev > commit.upToSeq) {
          // [P-4.3] an entry between the cursor and this one may still come (the agent held it when it sent this)
          commit.waiting = sorted.slice(index);
          break;
        }
        commit.upToSeq = entry.seq; // gaps the cursor moves over are entries the agent no longer holds
        commit.receivedAt.push(entry.receivedAt);
        counts[entry.kind] += 1;
        switch (entry.kind) {
          case 'telemetry':
            rollups.add(deviceId, entry.value);
            commit.telemetry.push(entry.value);
            break;
          case 'event':
            events.push(eventRow(deviceId, entry.value));
            commit.events.push(entry.value);
            break;
          case 'usage':
            // Requests the gateway dispatched are recorded by the gateway (key, tier, retries, one row per request
            // across failover attempts); the agent's records add the requests it served locally, also offline.
            if (entry.value.origin === 'local') usage.push(usageRow(deviceId, entry.value));
            break;
        }
      }
    }

    // Every multi-row write below grows with the fleet: chunked under PostgreSQL's bind-parameter limit.
    for (const statement of rollupUpsertSql(rollups.values())) await tx.$executeRaw(statement);
    for (const chunk of chunkRows(events, EVENT_COLUMNS)) await tx.deviceEvent.createMany({ data: chunk, skipDuplicates: true });
    for (const chunk of chunkRows(usage, USAGE_COLUMNS)) await tx.inferenceRequest.createMany({ data: chunk, skipDuplicates: true });

    const advanced = [...result].filter(([deviceId, commit]) => commit.upToSeq > (cursors.get(deviceId) ?? 0));
    if (advanced.length > 0) {
      const now = new Date().toISOString();
      const rows = advanced.map(([deviceId, commit]) => Prisma.sql`(${deviceId}, ${BigInt(commit.upToSeq)}::bigint, ${now}::timestamp(3))`);
      const cursorUpserts = chunkedStatements(
        rows,
        (values) => Prisma.sql`INSERT INTO "device_outbox_cursors" ("device_id", "last_acked_seq", "updated_at") VALUES ${values}
        ON CONFLICT ("device_id") DO UPDATE SET "last_acked_seq" = GREATEST("device_outbox_cursors"."last_acked_seq", EXCLUDED."last_acked_seq"),
        "updated_at" = EXCLUDED."updated_at"`,
      );
      for (const statement of cursorUpserts) await tx.$executeRaw(statement);
      // last seen without touching updated_at (it means "changed", not "heard from")
      const ids = advanced.map(([deviceId]) => Prisma.sql`${deviceId}`);
      const lastSeen = chunkedStatements(ids, (values) => Prisma.sql`UPDATE "devices" SET "last_seen_at" = ${now}::timestamp(3) WHERE "id" IN (${values})`);
      for (const statement of lastSeen) await tx.$executeRaw(statement);
    }
    for (const kind of ['telemetry', 'event', 'usage'] as const) this.stats.stored[kind] += counts[kind];
    return result;
  }

  private scheduleAck(deviceId: string): void {
    if (this.ackTimers.has(deviceId)) return;
    const wait = (this.lastAckAt.get(deviceId) ?? 0) + this.settings.ackIntervalMs - Date.now();
    if (wait <= 0 || this.stopped) {
      this.publishAck(deviceId);
      return;
    }
    const timer = setTimeout(() => {
      this.ackTimers.delete(deviceId);
      this.publishAck(deviceId);
    }, wait);
    timer.unref();
    this.ackTimers.set(deviceId, timer);
  }

  private publishAck(deviceId: string, sessionId?: string): void {
    const upToSeq = this.acked.get(deviceId);
    if (upToSeq === undefined || this.broker.closed) return;
    const ts = Date.now();
    this.lastAckAt.set(deviceId, ts);
    this.stats.acksPublished += 1;
    const resend = this.resendWanted.delete(deviceId);
    this.broker
      .publish(topics.outboxAck(deviceId), encode('outboxAck', { v: 1, upToSeq, ts, ...(resend ? { resend } : {}), ...(sessionId ? { sessionId } : {}) }), { qos: 1 })
      .catch((error: unknown) => this.logger.warn({ err: error, deviceId }, 'outbox ack not published'));
  }
}

/** Splits a flush's batch into parts of at most `limit` entries (a device's entries stay together). */
function splitBatch(batch: Map<string, Map<number, Buffered>>, limit: number): Map<string, Map<number, Buffered>>[] {
  const parts: Map<string, Map<number, Buffered>>[] = [];
  let part = new Map<string, Map<number, Buffered>>();
  let size = 0;
  for (const [deviceId, entries] of batch) {
    if (size > 0 && size + entries.size > limit) {
      parts.push(part);
      part = new Map();
      size = 0;
    }
    part.set(deviceId, entries);
    size += entries.size;
  }
  if (size > 0) parts.push(part);
  return parts;
}

function eventRow(deviceId: string, event: DeviceEvent): Prisma.DeviceEventCreateManyInput {
  return {
    deviceId,
    seq: BigInt(event.seq),
    at: new Date(event.ts),
    level: event.level,
    code: event.code,
    message: event.message,
    model: event.model ?? null,
    requestId: event.requestId ?? null,
    ...(event.details ? { details: event.details as Prisma.InputJsonObject } : {}),
  };
}

function usageRow(deviceId: string, usage: UsageRecord): Prisma.InferenceRequestCreateManyInput {
  return {
    requestId: usage.requestId,
    requestedModel: usage.model,
    model: usage.model,
    deviceId,
    latencyMs: Math.round(usage.latencyMs),
    ttftMs: usage.ttftMs === undefined ? null : Math.round(usage.ttftMs),
    tokensIn: usage.promptTokens,
    tokensOut: usage.completionTokens,
    outcome: usage.outcome,
    errorCode: usage.errorCode ?? null,
    createdAt: new Date(usage.ts),
  };
}
