import { Inject, Injectable, type OnApplicationShutdown, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { encode, topics, type DeviceEvent, type Telemetry, type UsageRecord } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../app/tokens.js';
import type { EmbeddedBroker } from '../broker/embedded-broker.js';
import type { Database } from '../database/index.js';
import { FleetEvents } from '../events/fleet-events.js';
import { Prisma } from '../generated/prisma/client.js';
import { IngestStats, type OutboxKind } from './ingest-stats.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from './registry.settings.js';
import { TelemetryCache } from './telemetry-cache.js';
import { RollupAccumulator, rollupUpsertSql } from './telemetry-rollups.js';

type Entry =
  | { kind: 'telemetry'; seq: number; value: Telemetry; receivedAt: number }
  | { kind: 'event'; seq: number; value: DeviceEvent; receivedAt: number }
  | { kind: 'usage'; seq: number; value: UsageRecord; receivedAt: number };

interface DeviceCommit {
  upToSeq: number;
  telemetry: Telemetry[];
  events: DeviceEvent[];
  receivedAt: number[];
}

type TransactionClient = Prisma.TransactionClient;

/**
 * Agent outbox entries (telemetry, events, usage) [P-4]: buffered in memory and written in one transaction per flush
 * (every `flushIntervalMs` or `flushEntries`), never one write per message. Duplicates are dropped by seq against the
 * per-device cursor, which advances in the same transaction, so a resend after any crash is stored exactly once.
 * `outbox/ack` goes out only after the commit [P-4.2]: the broker's PUBACK comes before our code runs (FACTS).
 */
@Injectable()
export class OutboxIngestService implements OnModuleInit, OnModuleDestroy, OnApplicationShutdown {
  private buffer = new Map<string, Map<number, Entry>>();
  private buffered = 0;
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
      if (this.buffered > 0) void this.flush();
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
    let entries = this.buffer.get(deviceId);
    if (entries?.has(entry.seq)) {
      this.stats.duplicates += 1;
      return;
    }
    if (this.buffered >= this.settings.maxBufferedEntries) {
      // Not acknowledged, so the agent keeps it and resends: backpressure instead of unbounded memory.
      this.stats.overflowDropped += 1;
      return;
    }
    if (!entries) {
      entries = new Map();
      this.buffer.set(deviceId, entries);
    }
    entries.set(entry.seq, entry);
    this.buffered += 1;
    this.stats.buffered = this.buffered;
    if (this.buffered >= this.settings.flushEntries) void this.flush();
  }

  /**
   * [P-1.6][P-4.2][P-4.4] After a hello: load the device's cursor, reset it when the agent's lastSeq is below it (the
   * agent lost its outbox), and always publish an ack with the current value so an agent whose ack was lost learns it.
   */
  onHello(deviceId: string, lastSeq: number, sessionId?: string): Promise<number> {
    return this.exclusive(async () => {
      const cursor = await this.db.prisma.deviceOutboxCursor.findUnique({ where: { deviceId } });
      let acked = Number(cursor?.lastAckedSeq ?? 0n);
      if (lastSeq < acked) {
        await this.db.prisma.$transaction(async (tx) => {
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
        });
        // Buffered entries came from the lost store; their seqs now mean something else.
        const dropped = this.buffer.get(deviceId)?.size ?? 0;
        this.buffer.delete(deviceId);
        this.buffered -= dropped;
        this.stats.buffered = this.buffered;
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
    this.stats.buffered = 0;
    const started = Date.now();
    let committed: Map<string, DeviceCommit>;
    try {
      committed = await this.db.prisma.$transaction((tx) => this.write(tx, batch));
    } catch (error) {
      // One bad device must not hold back the others: retry device by device.
      this.stats.flushFailures += 1;
      this.logger.error({ err: error, devices: batch.size }, 'outbox flush failed; retrying per device');
      committed = new Map();
      for (const [deviceId, entries] of batch) {
        try {
          const one = await this.db.prisma.$transaction((tx) => this.write(tx, new Map([[deviceId, entries]])));
          for (const [id, commit] of one) committed.set(id, commit);
        } catch (deviceError) {
          this.stats.flushFailures += 1;
          // Not acknowledged: the agent keeps the entries and resends them.
          this.logger.error({ err: deviceError, deviceId, entries: entries.size }, 'outbox entries of a device could not be stored');
        }
      }
    }
    const now = Date.now();
    this.stats.flushes += 1;
    this.stats.lastFlushMs = now - started;
    let lag = 0;
    for (const [deviceId, commit] of committed) {
      const known = this.acked.get(deviceId) ?? 0;
      this.acked.set(deviceId, Math.max(known, commit.upToSeq));
      for (const receivedAt of commit.receivedAt) lag = Math.max(lag, now - receivedAt);
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
  }

  /** One transaction: filter by the stored cursors, write rollups, events, usage, then advance the cursors. */
  private async write(tx: TransactionClient, batch: Map<string, Map<number, Entry>>): Promise<Map<string, DeviceCommit>> {
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
      const commit: DeviceCommit = { upToSeq: stored, telemetry: [], events: [], receivedAt: [] };
      result.set(deviceId, commit);
      for (const entry of [...entries.values()].sort((a, b) => a.seq - b.seq)) {
        if (entry.seq <= stored) {
          this.stats.duplicates += 1;
          continue;
        }
        commit.upToSeq = entry.seq; // [P-4.3] up to the highest committed seq; gaps are entries the agent dropped
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

    if (rollups.size > 0) await tx.$executeRaw(rollupUpsertSql(rollups.values()));
    if (events.length > 0) await tx.deviceEvent.createMany({ data: events, skipDuplicates: true });
    if (usage.length > 0) await tx.inferenceRequest.createMany({ data: usage, skipDuplicates: true });

    const advanced = [...result].filter(([deviceId, commit]) => commit.upToSeq > (cursors.get(deviceId) ?? 0));
    if (advanced.length > 0) {
      const now = new Date().toISOString();
      const rows = advanced.map(([deviceId, commit]) => Prisma.sql`(${deviceId}, ${BigInt(commit.upToSeq)}::bigint, ${now}::timestamp(3))`);
      await tx.$executeRaw`INSERT INTO "device_outbox_cursors" ("device_id", "last_acked_seq", "updated_at") VALUES ${Prisma.join(rows)}
        ON CONFLICT ("device_id") DO UPDATE SET "last_acked_seq" = GREATEST("device_outbox_cursors"."last_acked_seq", EXCLUDED."last_acked_seq"),
        "updated_at" = EXCLUDED."updated_at"`;
      // last seen without touching updated_at (it means "changed", not "heard from")
      await tx.$executeRaw`UPDATE "devices" SET "last_seen_at" = ${now}::timestamp(3)
        WHERE "id" IN (${Prisma.join(advanced.map(([deviceId]) => deviceId))})`;
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
    this.broker
      .publish(topics.outboxAck(deviceId), encode('outboxAck', { v: 1, upToSeq, ts, ...(sessionId ? { sessionId } : {}) }), { qos: 1 })
      .catch((error: unknown) => this.logger.warn({ err: error, deviceId }, 'outbox ack not published'));
  }
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
