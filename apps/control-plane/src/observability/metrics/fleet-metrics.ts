import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { DEVICES_PREFIX, TOPIC_SPECS, parseTopic } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { BROKER, DATABASE, LOGGER } from '../../platform/tokens.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import { readyReplicaCounts } from '../alerts/fleet-facts.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';

const DEVICE_STATUSES = ['online', 'offline', 'draining', 'revoked', 'reconnecting'] as const;
const MODEL_STATES = ['pending', 'downloading', 'verifying', 'loading', 'ready', 'unloading', 'failed'] as const;
/** Store-and-forward makes lags of hours possible: buckets reach a day. */
const LAG_BUCKETS = [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400];
/** Database-backed gauges are refreshed at most this often, however often /metrics is scraped. */
const DB_REFRESH_MS = 1000;

/**
 * Fleet and broker metrics: devices by status, placements and replicas from the database (read at scrape time,
 * rate-limited), broker connections, message counts and bytes per topic kind, and ingest lag (arrival time minus the
 * `ts` an outbox entry was created with on the device: network delay plus any store-and-forward time).
 */
@Injectable()
export class FleetMetrics implements OnModuleInit, OnModuleDestroy {
  private unsubscribe: (() => Promise<void>) | undefined;
  private refreshed: Promise<void> | undefined;
  private refreshedAt = 0;
  private readonly loopDelay: IntervalHistogram = monitorEventLoopDelay({ resolution: 20 });

  private readonly messages;
  private readonly messageBytes;
  private readonly ingestLag;
  private readonly devices;
  private readonly placements;
  private readonly replicas;
  private readonly modelStates;

  constructor(
    private readonly registry: MetricsRegistry,
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly presence: DevicePresence,
  ) {
    this.messages = registry.counter({
      name: 'flotilla_broker_messages_total',
      help: 'MQTT messages under flotilla/v1/devices, by direction and topic kind.',
      labelNames: ['direction', 'kind'],
    });
    this.messageBytes = registry.counter({
      name: 'flotilla_broker_message_bytes_total',
      help: 'MQTT payload bytes under flotilla/v1/devices, by direction and topic kind.',
      labelNames: ['direction', 'kind'],
    });
    this.ingestLag = registry.histogram({
      name: 'flotilla_ingest_lag_seconds',
      help: 'Time from an agent creating an outbox entry (its ts) to the control plane receiving it, by kind.',
      labelNames: ['kind'],
      buckets: LAG_BUCKETS,
    });
    registry.gauge({
      name: 'flotilla_broker_connections',
      help: 'MQTT clients connected to the embedded broker.',
      collect: (g) => g.set(undefined, this.broker.connectedClients),
    });
    this.devices = registry.gauge({
      name: 'flotilla_devices',
      help: 'Enrolled devices by status.',
      labelNames: ['status'],
      collect: () => this.refreshFromDatabase(),
    });
    this.placements = registry.gauge({ name: 'flotilla_placements', help: 'Placements (models a device should hold), by model.', labelNames: ['model'] });
    this.replicas = registry.gauge({
      name: 'flotilla_deployment_replicas',
      help: 'Replicas per deployment: desired (declared), placed (placements) and ready (placed on an online device that reports the model ready).',
      labelNames: ['deployment', 'kind'],
    });
    this.modelStates = registry.gauge({ name: 'flotilla_model_states', help: 'Model states reported by devices, by state.', labelNames: ['state'] });
    this.loopDelay.enable();
    registry.gauge({
      name: 'flotilla_process_resident_memory_bytes',
      help: 'Resident memory of the control-plane process.',
      collect: (g) => g.set(undefined, process.memoryUsage.rss()),
    });
    registry.gauge({
      name: 'flotilla_process_event_loop_delay_seconds',
      help: 'Event loop delay of the control-plane process since the previous scrape, by quantile.',
      labelNames: ['quantile'],
      collect: (g) => {
        g.set({ quantile: '0.5' }, this.loopDelay.percentile(50) / 1e9);
        g.set({ quantile: '0.99' }, this.loopDelay.percentile(99) / 1e9);
        g.set({ quantile: '1' }, this.loopDelay.max / 1e9);
        this.loopDelay.reset();
      },
    });
    registry.gauge({
      name: 'flotilla_process_uptime_seconds',
      help: 'Seconds since the control-plane process started.',
      collect: (g) => g.set(undefined, process.uptime()),
    });
  }

  async onModuleInit(): Promise<void> {
    this.unsubscribe = await this.broker.subscribe(`${DEVICES_PREFIX}/#`, (message) => this.count(message.topic, message.payload));
  }

  async onModuleDestroy(): Promise<void> {
    this.loopDelay.disable();
    // The broker may already be closed by the time Nest shuts down; unsubscribing then is pointless.
    if (!this.broker.closed) await this.unsubscribe?.().catch(() => undefined);
  }

  /** Counts one message seen on the broker (public for the gateway, which may publish outside this subscription). */
  count(topic: string, payload: Buffer, receivedAt = Date.now()): void {
    const parsed = parseTopic(topic);
    const kind = parsed?.kind ?? 'other';
    const direction = parsed ? TOPIC_SPECS[parsed.kind].direction : 'unknown';
    this.messages.inc({ direction, kind });
    this.messageBytes.inc({ direction, kind }, payload.length);
    if (parsed && TOPIC_SPECS[parsed.kind].outbox) {
      const ts = outboxTimestamp(payload);
      if (ts !== undefined) this.ingestLag.observe({ kind }, Math.max(0, receivedAt - ts) / 1000);
    }
  }

  private refreshFromDatabase(): Promise<void> {
    if (this.refreshed && Date.now() - this.refreshedAt < DB_REFRESH_MS) return this.refreshed;
    this.refreshedAt = Date.now();
    this.refreshed = this.readDatabase().catch((error: unknown) => {
      this.refreshedAt = 0;
      this.logger.warn({ err: error }, 'metrics: database read failed');
      throw error;
    });
    return this.refreshed;
  }

  private async readDatabase(): Promise<void> {
    const prisma = this.db.prisma;
    const reconnecting = await this.presence.reconnectingDevices();
    const [byStatus, byModel, byState, deployments, readyRows] = await Promise.all([
      prisma.device.groupBy({ by: ['status'], _count: { _all: true } }),
      prisma.placement.groupBy({ by: ['modelId'], _count: { _all: true } }),
      prisma.modelState.groupBy({ by: ['state'], _count: { _all: true } }),
      prisma.deployment.findMany({ select: { id: true, name: true, replicas: true, _count: { select: { placements: true } } } }),
      readyReplicaCounts(this.db, reconnecting),
    ]);
    // As the REST views say it: a device stored online or draining that has not come back to this process yet is
    // reconnecting, not online.
    const counts = new Map<string, number>(byStatus.map((r) => [r.status, r._count._all]));
    for (const stored of reconnecting.values()) counts.set(stored, (counts.get(stored) ?? 0) - 1);
    counts.set('reconnecting', reconnecting.size);
    this.devices.reset();
    for (const status of DEVICE_STATUSES) this.devices.set({ status }, Math.max(0, counts.get(status) ?? 0));

    const models = await prisma.model.findMany({ where: { id: { in: byModel.map((r) => r.modelId) } }, select: { id: true, name: true } });
    const nameOf = new Map(models.map((m) => [m.id, m.name]));
    this.placements.reset();
    for (const row of byModel) this.placements.set({ model: nameOf.get(row.modelId) ?? row.modelId }, row._count._all);

    this.modelStates.reset();
    for (const state of MODEL_STATES) this.modelStates.set({ state }, byState.find((r) => r.state === state)?._count._all ?? 0);

    this.replicas.reset();
    for (const d of deployments) {
      this.replicas.set({ deployment: d.name, kind: 'desired' }, d.replicas);
      this.replicas.set({ deployment: d.name, kind: 'placed' }, d._count.placements);
      this.replicas.set({ deployment: d.name, kind: 'ready' }, readyRows.get(d.id) ?? 0);
    }
  }
}

/** The `ts` of an outbox payload without validating the rest (metrics only; the ingest path decodes properly). */
function outboxTimestamp(payload: Buffer): number | undefined {
  try {
    const value: unknown = JSON.parse(payload.toString('utf8'));
    if (typeof value !== 'object' || value === null) return undefined;
    const ts = (value as { ts?: unknown }).ts;
    return typeof ts === 'number' && Number.isFinite(ts) ? ts : undefined;
  } catch {
    return undefined;
  }
}
