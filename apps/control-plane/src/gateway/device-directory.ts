import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { decodeTopic, topics } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../platform/tokens.js';
import type { EmbeddedBroker } from '../platform/broker/embedded-broker.js';
import type { Database } from '../platform/database/index.js';
import { FleetEvents } from '../platform/events/fleet-events.js';
import { DevicePresence } from '../devices/ingest/device-presence.js';

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
  /** accepting new work: said online (hello/status) to this process, or its session on this broker is live */
  online: boolean;
  /**
   * Stored as online by an earlier control-plane process but not heard from by this one: it may be dead. Never routed
   * to; requests may wait for it to come back (the registry's reconnect grace ends the wait by marking it offline).
   */
  reconnecting: boolean;
  /** connected (online or draining): its running jobs may still answer */
  connected: boolean;
  sessionId: string | null;
  /** model name -> ready (loaded in memory or loadable on demand) */
  ready: Set<string>;
  /** model name -> sha256 of the ready file, from the device's own report (absent when unknown or ambiguous) */
  files: Map<string, string>;
  /** ts of the last model-state snapshot applied (older snapshots are ignored [P-3.5]) */
  snapshotTs: number;
}

type OfflineListener = (deviceId: string) => void;
type OnlineListener = (deviceId: string) => void;

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
  private readonly onlineListeners = new Set<OnlineListener>();
  private readonly unsubscribers: (() => unknown)[] = [];
  private catalogLoadedAt = 0;
  private catalogLoading: Promise<void> | undefined;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly events: FleetEvents,
    private readonly presence: DevicePresence,
  ) {}

  async onModuleInit(): Promise<void> {
    this.unsubscribers.push(await this.broker.subscribe(topics.allDevices.status, (m) => this.onMessage(m.topic, m.payload)));
    this.unsubscribers.push(await this.broker.subscribe(topics.allDevices.modelState, (m) => this.onMessage(m.topic, m.payload)));
    this.unsubscribers.push(
      this.events.on('device.status', ({ deviceId, status }) => {
        if (status === 'online') this.markOnline(deviceId);
        else if (status === 'draining') this.markDraining(deviceId);
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

  /** Called with the id of a device that can take work again (it said online to this process). */
  onDeviceOnline(listener: OnlineListener): () => void {
    this.onlineListeners.add(listener);
    return () => this.onlineListeners.delete(listener);
  }

  /**
   * Routing candidates for `model`: online devices with a ready replica, and devices still reconnecting after a
   * control-plane restart that had one. Only online ones are leased (`isOnline`, the balancer's gate); a request
   * whose only candidates are reconnecting waits for one to come back instead of failing at once.
   */
  devicesFor(model: string): string[] {
    const out: string[] = [];
    for (const [id, d] of this.devices) if ((d.online || d.reconnecting) && d.ready.has(model)) out.push(id);
    return out;
  }

  /** Online devices with a ready replica of `model` (what the fleet can serve right now). */
  replicasOf(model: string): string[] {
    const out: string[] = [];
    for (const [id, d] of this.devices) if (d.online && d.ready.has(model)) out.push(id);
    return out;
  }

  /** The sha256 of the file the device serves `model` from, as it last reported; undefined when not known. */
  modelSha256(deviceId: string, model: string): string | undefined {
    return this.devices.get(deviceId)?.files.get(model);
  }

  /** Whether the device may be given new work now. */
  isOnline(deviceId: string): boolean {
    return this.devices.get(deviceId)?.online ?? false;
  }

  /** Stored as online before this process started and not heard from since. */
  isReconnecting(deviceId: string): boolean {
    return this.devices.get(deviceId)?.reconnecting ?? false;
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

  /** Names of models with a ready replica on an online or reconnecting device (may be outside the catalog). */
  servedModels(): Set<string> {
    const names = new Set<string>();
    for (const d of this.devices.values()) if (d.online || d.reconnecting) for (const m of d.ready) names.add(m);
    return names;
  }

  /**
   * The database says which devices were online and what they had ready, as an earlier process last knew it: a device
   * may have died while no control plane was watching. The registry's DevicePresence decides which stored-online devices are
   * reconnecting (not heard from by this process, no live session on this broker) — the same rule the REST views
   * use; those are never routable until they say online to this process (their retained status, re-published on
   * every connect).
   */
  private async loadFromDatabase(): Promise<void> {
    const [devices, states] = await Promise.all([
      this.db.prisma.device.findMany({ where: { status: 'online' }, select: { id: true, sessionId: true } }),
      this.db.prisma.modelState.findMany({ where: { state: 'ready' }, select: { deviceId: true, modelName: true } }),
    ]);
    for (const d of devices) {
      const e = this.entry(d.id);
      // Live messages may already have arrived; they win over the database.
      if (e.online || e.connected || e.snapshotTs !== 0) continue;
      e.sessionId = d.sessionId;
      if (this.presence.isReconnecting(d.id, 'online')) e.reconnecting = true;
      else {
        e.online = true;
        e.connected = true;
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
        e.sessionId = status.sessionId;
        this.markOnline(deviceId);
      } else if (status.state === 'draining') {
        // A draining device refuses new jobs; running ones finish.
        e.sessionId = status.sessionId;
        this.markDraining(deviceId);
      } else if (e.sessionId === null || e.sessionId === status.sessionId) {
        // [P-3.2] a late will from an older connection is ignored
        this.markOffline(deviceId);
      }
    } else if (decoded.value.kind === 'modelState') {
      const report = decoded.value.value;
      const e = this.entry(deviceId);
      if (report.ts < e.snapshotTs) return; // [P-3.5] older snapshot
      e.snapshotTs = report.ts;
      const ready = report.models.filter((m) => m.state === 'ready');
      e.ready = new Set(ready.map((m) => m.name));
      // Two ready files under one name: which one answers is not known, so neither is named.
      const shas = new Map<string, string | null>();
      for (const m of ready) shas.set(m.name, shas.has(m.name) && shas.get(m.name) !== m.sha256 ? null : m.sha256);
      e.files = new Map([...shas].filter((entry): entry is [string, string] => entry[1] !== null));
    }
  }

  private markOnline(deviceId: string): void {
    const e = this.entry(deviceId);
    const was = e.online;
    e.online = true;
    e.connected = true;
    e.reconnecting = false;
    if (was) return;
    for (const listener of this.onlineListeners) {
      try {
        listener(deviceId);
      } catch (error) {
        this.logger.error({ err: error, deviceId }, 'device online listener failed');
      }
    }
  }

  private markDraining(deviceId: string): void {
    const e = this.entry(deviceId);
    e.online = false;
    e.connected = true;
    e.reconnecting = false;
  }

  private markOffline(deviceId: string): void {
    const e = this.devices.get(deviceId);
    if (!e) return;
    const was = e.connected;
    e.online = false;
    e.connected = false;
    e.reconnecting = false;
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
      e = { online: false, reconnecting: false, connected: false, sessionId: null, ready: new Set(), files: new Map(), snapshotTs: 0 };
      this.devices.set(deviceId, e);
    }
    return e;
  }
}
