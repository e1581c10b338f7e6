import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { isValidDeviceId, type Hello, type Status } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../../platform/tokens.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { DeviceStatus, Prisma } from '../../generated/prisma/client.js';
import { DevicePresence, type PresenceStatus } from './device-presence.js';
import { DeviceQueue } from './device-queue.js';
import { DeviceWriteBatcher, type GuardRow } from './device-writes.js';
import { IngestStats } from './ingest-stats.js';
import { OutboxIngestService } from './outbox-ingest.service.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from './device-ingest.settings.js';
import { chunkRows } from '../../platform/database/bulk.js';
import { isTransientDatabaseError, retryTransient } from '../../platform/database/retry.js';

/** Why a status changed, stored in the status history. */
export type StatusReason =
  | 'hello'
  | 'startup'
  | 'shutdown'
  | 'drain'
  | 'connection-lost'
  | 'disconnected'
  | 'keepalive-timeout'
  | 'restart-grace'
  | 'revoked';

interface Known {
  status: DeviceStatus;
  /** the current session [P-3.2]: the one of the last hello or online/draining status */
  sessionId: string | null;
}

type DeviceRow = GuardRow;

/**
 * Device status and liveness [P-1.6][P-3.1][P-3.2]: hello and status messages, the broker's session ends (last will,
 * keepalive timeout) and the reconnect grace after a control-plane start. Every change is stored with its history
 * and emitted as `device.status`. Callers run the MQTT-driven methods in the device's DeviceQueue.
 */
@Injectable()
export class DeviceLivenessService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly known = new Map<string, Known>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private removeDisconnectHook: (() => void) | undefined;
  private startedAt = new Date();
  private graceDone: Promise<string[]> | undefined;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(REGISTRY_SETTINGS) private readonly settings: RegistrySettings,
    private readonly queue: DeviceQueue,
    private readonly outbox: OutboxIngestService,
    private readonly events: FleetEvents,
    private readonly stats: IngestStats,
    private readonly presence: DevicePresence,
    private readonly writes: DeviceWriteBatcher,
  ) {}

  onApplicationBootstrap(): void {
    this.startedAt = new Date();
    this.removeDisconnectHook = this.broker.onClientDisconnect((clientId, reason) => this.disconnected(clientId, reason));
    const expire = () => {
      // Awaited on shutdown and never left unhandled: a failed expiry is logged, the process keeps running, and one
      // that failed because the database was busy or away is tried again later (the devices must not stay online).
      this.graceDone = this.expireUnreturned().catch((error: unknown) => {
        const transient = isTransientDatabaseError(error);
        this.logger.error({ err: error }, transient ? 'reconnect-grace expiry failed; tried again later' : 'reconnect-grace expiry failed');
        if (transient) this.later(this.settings.deviceWriteDeferMs, expire);
        return [];
      });
    };
    this.later(this.settings.reconnectGraceMs, expire);
  }

  async onModuleDestroy(): Promise<void> {
    this.removeDisconnectHook?.();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    await this.graceDone?.catch(() => undefined);
  }

  /** [P-3.1] Inventory, agent version, last seen, the new session; online unless it is draining. */
  async hello(deviceId: string, hello: Hello, receivedAt: number): Promise<void> {
    const first = this.presence.noteHeard(deviceId);
    // batched with other devices' writes; resolves after the commit, with the outbox cursor read in it
    const outcome = await this.writes.hello(deviceId, hello, receivedAt);
    if (!outcome) {
      this.logger.warn({ deviceId }, 'hello from an unknown or revoked device ignored');
      return;
    }
    this.known.set(deviceId, { status: outcome.next, sessionId: hello.sessionId });
    this.logger.info({ deviceId, sessionId: hello.sessionId, agentVersion: hello.agentVersion }, 'device hello');
    this.emitStatus(deviceId, first ? this.returned(outcome.previous) : outcome.previous, outcome.next, receivedAt);
    if (outcome.fields.length > 0) this.events.emit('device.updated', { deviceId, fields: outcome.fields });
    await this.outbox.onHello(deviceId, hello.outbox.lastSeq, hello.sessionId, outcome.cursor);
  }

  /** [P-3.2] online/draining adopt the message's session; an offline counts only for the current session. */
  async status(deviceId: string, status: Status, receivedAt: number): Promise<void> {
    const known = this.known.get(deviceId);
    if (known?.status === 'revoked') return;
    if (status.state === 'offline') {
      if (known && known.sessionId !== null && known.sessionId !== status.sessionId) {
        this.staleOffline(deviceId, status.sessionId, known.sessionId);
        return;
      }
      // Not known yet: the same judgement against the stored row, in the batch (no read of its own).
      const guard = known
        ? (row: DeviceRow) => row.sessionId === known.sessionId
        : (row: DeviceRow) => {
            const current = row.sessionId === null || row.sessionId === status.sessionId;
            if (!current) this.staleOffline(deviceId, status.sessionId, row.sessionId);
            return current;
          };
      await this.apply(deviceId, 'offline', status.reason ?? 'shutdown', { guard });
      return;
    }
    const first = this.presence.noteHeard(deviceId);
    await this.apply(deviceId, status.state, status.reason ?? (status.state === 'draining' ? 'drain' : 'startup'), {
      sessionId: status.sessionId,
      lastSeenAt: new Date(receivedAt),
      ...(first ? { previous: (row: DeviceStatus) => this.returned(row) } : {}),
    });
  }

  private staleOffline(deviceId: string, sessionId: string, current: string | null): void {
    this.stats.staleStatuses += 1;
    this.logger.debug({ deviceId, sessionId, current }, 'offline of an older session ignored');
  }

  /** The previous status of a device's first message to this process: it was reconnecting if stored as connected. */
  private returned(stored: DeviceStatus): PresenceStatus {
    return stored === 'online' || stored === 'draining' ? 'reconnecting' : stored;
  }

  /**
   * A broker session ended. The last will normally says offline first; this covers sessions that end without one
   * (a clean DISCONNECT without an offline status, a client without a will). Waits briefly for the will or a new
   * session, then marks the device offline if that session is still the current one.
   */
  disconnected(clientId: string, reason: 'closed' | 'keepalive-timeout'): void {
    if (!isValidDeviceId(clientId)) return;
    const sessionAtEnd = this.known.get(clientId)?.sessionId;
    const connected = (status: DeviceStatus) => status === 'online' || status === 'draining';
    this.later(this.settings.disconnectSettleMs, () =>
      this.queue.post(clientId, 'disconnect handling', async () => {
        if (this.broker.isConnected(clientId)) return;
        const known = this.known.get(clientId);
        if (known && (!connected(known.status) || (sessionAtEnd !== undefined && known.sessionId !== sessionAtEnd))) return; // a newer session began
        await this.apply(clientId, 'offline', reason === 'keepalive-timeout' ? 'keepalive-timeout' : 'disconnected', {
          // judged against the stored row when this process does not know the device yet
          guard: (row) => connected(row.status) && (known ? row.sessionId === known.sessionId : sessionAtEnd === undefined || row.sessionId === sessionAtEnd),
        });
      }),
    );
  }

  /**
   * After a control-plane start: devices still marked online/draining that have not been heard from since the start
   * and have no live session become offline. Returns their ids. One transaction for all of them (chunked under the
   * parameter limit), retried while the pool cannot start it: a fleet's worth of per-device transactions started at
   * once exhausts the pool (P2028). The devices' queues are held meanwhile, so a hello arriving during the batch is
   * applied after it, and its `online` follows our `offline`.
   */
  async expireUnreturned(): Promise<string[]> {
    const startedAt = this.startedAt;
    const unreturned: Prisma.DeviceWhereInput = { OR: [{ lastSeenAt: null }, { lastSeenAt: { lt: startedAt } }] };
    const candidates = await this.db.prisma.device.findMany({
      where: { status: { in: ['online', 'draining'] }, ...unreturned },
      select: { id: true },
    });
    // Connected but silent: its hello may have come before our subscriptions; the session is live.
    const ids = candidates.map(({ id }) => id).filter((id) => !this.broker.isConnected(id));
    if (ids.length === 0) return [];

    let release = (): void => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    const entered = ids.map(
      (id) =>
        new Promise<void>((resolve) => {
          this.queue
            .run(id, () => {
              resolve();
              return released;
            })
            .catch(() => undefined);
        }),
    );
    try {
      await Promise.all(entered);
      const expired = await retryTransient(() =>
        this.db.prisma.$transaction(async (tx) => {
          const changed: { id: string; previous: DeviceStatus; sessionId: string | null }[] = [];
          for (const previous of ['online', 'draining'] as const) {
            for (const chunk of chunkRows(ids, 1)) {
              // the guard is in the WHERE clause, so a row changed since the candidates were read is left alone
              const rows = await tx.device.updateManyAndReturn({
                where: { id: { in: chunk }, status: previous, ...unreturned },
                data: { status: 'offline' },
                select: { id: true, sessionId: true },
              });
              for (const row of rows) changed.push({ id: row.id, previous, sessionId: row.sessionId });
            }
          }
          const history = changed.map(({ id, previous }) => ({ deviceId: id, status: 'offline' as const, previous, reason: 'restart-grace' }));
          for (const chunk of chunkRows(history, 6)) await tx.deviceStatusChange.createMany({ data: chunk });
          return changed;
        }),
      );
      const at = Date.now();
      for (const { id, previous, sessionId } of expired) {
        this.known.set(id, { status: 'offline', sessionId });
        this.emitStatus(id, previous, 'offline', at);
      }
      if (expired.length > 0) this.logger.info({ devices: expired.length }, 'devices that did not reconnect after the restart marked offline');
      return expired.map(({ id }) => id);
    } finally {
      release();
    }
  }

  /** Records a status set elsewhere (e.g. revocation) so later messages are judged against it. */
  remember(deviceId: string, status: DeviceStatus, sessionId: string | null): void {
    this.known.set(deviceId, { status, sessionId });
  }

  /** Sets a status (with history and event) unless the device is revoked or `guard` rejects the stored row. */
  private async apply(
    deviceId: string,
    next: DeviceStatus,
    reason: StatusReason,
    options: {
      guard?: (row: DeviceRow) => boolean;
      sessionId?: string;
      lastSeenAt?: Date;
      /** the previous status the event names (e.g. `reconnecting` rather than the stored one) */
      previous?: (stored: DeviceStatus) => PresenceStatus;
    } = {},
  ): Promise<boolean> {
    const { previous: namePrevious, ...write } = options;
    const outcome = await this.writes.status(deviceId, { next, reason, ...write });
    if (!outcome) return false;
    // what the row says now, also when the guard refused: later messages are judged against it
    this.known.set(deviceId, { status: outcome.status, sessionId: outcome.sessionId });
    if (!outcome.applied) return false;
    if (outcome.previous !== next) this.logger.info({ deviceId, status: next, previous: outcome.previous, reason }, 'device status changed');
    this.emitStatus(deviceId, namePrevious?.(outcome.previous) ?? outcome.previous, next, Date.now());
    return outcome.previous !== next;
  }

  /** `device.status` when the status moved, including from `reconnecting` to what the device says after a restart. */
  private emitStatus(deviceId: string, previous: PresenceStatus, next: DeviceStatus, at: number): void {
    if (previous === next) return;
    this.events.emit('device.status', { deviceId, status: next, previous, at: new Date(at).toISOString() });
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    timer.unref();
    this.timers.add(timer);
  }
}
