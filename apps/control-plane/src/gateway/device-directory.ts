import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { decodeTopic, topics } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../app/tokens.js';
import type { EmbeddedBroker } from '../broker/embedded-broker.js';
import type { Database } from '../database/index.js';
import { FleetEvents } from '../events/fleet-events.js';

export type Tier = 'small' | 'medium' | 'large';
export const TIERS: readonly Tier[] = ['small', 'medium', 'large'];

/** A catalog model as the gateway needs it. */
export interface CatalogModel {
  name: string;
  tier: Tier;
  contextLength: number;
  createdAt: number;
}

interface DeviceEntry {
  /** accepting new work */
  online: boolean;
  /** connected (online or draining): its running jobs may still answer */
  connected: boolean;
  sessionId: string | null;
  /** model name -> ready (loaded in memory or loadable on demand) */
  ready: Set<string>;
  /** ts of the last model-state snapshot applied (older snapshots are ignored [P-3.5]) */
  snapshotTs: number;
}

type OfflineListener = (deviceId: string) => void;

/**
 * In-memory view of which online devices hold a ready replica of which model, and of the catalog (tier, context
 * length). Loaded from the database at start, then kept current from the devices' own retained `status` and
 * `models/state` messages (the gateway subscribes itself, so it reacts to a dead device within the broker's own
 * detection time, without waiting for the registry's database write) and from the registry's `device.status`
 * fleet events.
 */
@Injectable()
export class DeviceDirectory implements OnModuleInit, OnModuleDestroy {
  private readonly devices = new Map<string, DeviceEntry>();
  private catalog = new Map<string, CatalogModel>();
  private readonly offlineListeners = new Set<OfflineListener>();
  private readonly unsubscribers: (() => unknown)[] = [];
  private catalogLoadedAt = 0;
  private catalogLoading: Promise<void> | undefined;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly events: FleetEvents,
  ) {}

  async onModuleInit(): Promise<void> {
    this.unsubscribers.push(await this.broker.subscribe(topics.allDevices.status, (m) => this.onMessage(m.topic, m.payload)));
    this.unsubscribers.push(await this.broker.subscribe(topics.allDevices.modelState, (m) => this.onMessage(m.topic, m.payload)));
    this.unsubscribers.push(
      this.events.on('device.status', ({ deviceId, status }) => {
        const e = this.entry(deviceId);
        if (status === 'online') {
          e.online = true;
          e.connected = true;
        } else if (status === 'draining') e.online = false;
        else this.markOffline(deviceId);
      }),
      this.events.on('catalog.changed', () => {
        this.catalogLoadedAt = 0;
      }),
    );
    await this.loadFromDatabase();
  }

  async onModuleDestroy(): Promise<void> {
    for (const unsubscribe of this.unsubscribers.splice(0)) await unsubscribe();
  }

  /** Called with the id of a device that just went offline (its in-flight requests must fail over). */
  onDeviceOffline(listener: OfflineListener): () => void {
    this.offlineListeners.add(listener);
    return () => this.offlineListeners.delete(listener);
  }

  /** Online devices with a ready replica of `model`. */
  devicesFor(model: string): string[] {
    const out: string[] = [];
    for (const [id, d] of this.devices) if (d.online && d.ready.has(model)) out.push(id);
    return out;
  }

  isOnline(deviceId: string): boolean {
    return this.devices.get(deviceId)?.online ?? false;
  }

  /** Catalog models (refreshed from the database at most every 5 s, or at once after `catalog.changed`). */
  async models(): Promise<Map<string, CatalogModel>> {
    if (Date.now() - this.catalogLoadedAt > 5000) {
      this.catalogLoading ??= this.loadCatalog().finally(() => {
        this.catalogLoading = undefined;
      });
      await this.catalogLoading;
    }
    return this.catalog;
  }

  /** Names of models with at least one ready replica on an online device (may be outside the catalog). */
  servedModels(): Set<string> {
    const names = new Set<string>();
    for (const d of this.devices.values()) if (d.online) for (const m of d.ready) names.add(m);
    return names;
  }

  private async loadFromDatabase(): Promise<void> {
    const [devices, states] = await Promise.all([
      this.db.prisma.device.findMany({ where: { status: 'online' }, select: { id: true, sessionId: true } }),
      this.db.prisma.modelState.findMany({ where: { state: 'ready' }, select: { deviceId: true, modelName: true } }),
    ]);
    for (const d of devices) {
      const e = this.entry(d.id);
      // Live messages may already have arrived; they win over the database.
      if (e.snapshotTs === 0) {
        e.online = true;
        e.connected = true;
        e.sessionId = d.sessionId;
      }
    }
    for (const s of states) {
      const e = this.entry(s.deviceId);
      if (e.snapshotTs === 0) e.ready.add(s.modelName);
    }
    await this.loadCatalog();
  }

  private async loadCatalog(): Promise<void> {
    const rows = await this.db.prisma.model.findMany({ select: { name: true, tier: true, contextLength: true, createdAt: true } });
    this.catalog = new Map(rows.map((r) => [r.name, { name: r.name, tier: r.tier, contextLength: r.contextLength, createdAt: r.createdAt.getTime() }]));
    this.catalogLoadedAt = Date.now();
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (payload.length === 0) return; // a cleared retained message [P-1.1]
    const decoded = decodeTopic(topic, payload);
    if (!decoded.ok) {
      this.logger.debug({ topic, code: decoded.error.code }, 'gateway ignored an undecodable device message');
      return;
    }
    const { deviceId } = decoded.value;
    if (decoded.value.kind === 'status') {
      const status = decoded.value.value;
      const e = this.entry(deviceId);
      if (status.state === 'online') {
        e.online = true;
        e.connected = true;
        e.sessionId = status.sessionId;
      } else if (status.state === 'draining') {
        // A draining device refuses new jobs; running ones finish.
        e.online = false;
      } else if (e.sessionId === null || e.sessionId === status.sessionId) {
        // [P-3.2] a late will from an older connection is ignored
        this.markOffline(deviceId);
      }
    } else if (decoded.value.kind === 'modelState') {
      const report = decoded.value.value;
      const e = this.entry(deviceId);
      if (report.ts < e.snapshotTs) return; // [P-3.5] older snapshot
      e.snapshotTs = report.ts;
      e.ready = new Set(report.models.filter((m) => m.state === 'ready').map((m) => m.name));
    }
  }

  private markOffline(deviceId: string): void {
    const e = this.devices.get(deviceId);
    if (!e) return;
    const was = e.connected;
    e.online = false;
    e.connected = false;
    if (!was) return;
    this.logger.info({ deviceId }, 'gateway: device offline');
    for (const listener of this.offlineListeners) {
      try {
        listener(deviceId);
      } catch (error) {
        this.logger.error({ err: error, deviceId }, 'device offline listener failed');
      }
    }
  }

  private entry(deviceId: string): DeviceEntry {
    let e = this.devices.get(deviceId);
    if (!e) {
      e = { online: false, connected: false, sessionId: null, ready: new Set(), snapshotTs: 0 };
      this.devices.set(deviceId, e);
    }
    return e;
  }
}
