import type { FleetHealthView, Recommendations } from '@flotilla/protocol';
import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../../platform/tokens.js';
import { ALERT_SETTINGS, type AlertSettings } from '../alerts/alert.settings.js';
import { FleetFactsReader } from '../alerts/fleet-facts.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents, type FleetEventName } from '../../platform/events/fleet-events.js';
import type { DeviceStatus } from '../../generated/prisma/client.js';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import { assessFleetHealth, type FleetHealthStatus } from './fleet-health.js';
import { recommendScaling } from './recommendations.js';

const STATUS_VALUE: Record<FleetHealthStatus, number> = { healthy: 0, degraded: 1, unhealthy: 2 };
/** Changes that can move fleet health; a burst of them is assessed once. */
const TRIGGERS: FleetEventName[] = ['device.status', 'device.enrolled', 'alert.changed', 'placement.changed', 'deployment.changed', 'model-state.changed'];
const DEBOUNCE_MS = 500;

/**
 * Computes fleet health on request and after fleet changes, emitting `fleet.health` when the status moves and keeping
 * the `flotilla_fleet_health` gauge (0 healthy, 1 degraded, 2 unhealthy) current.
 */
@Injectable()
export class FleetHealthService implements OnModuleInit, OnModuleDestroy {
  private last: FleetHealthStatus | null = null;
  private timer: NodeJS.Timeout | undefined;
  private pending: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private readonly offs: (() => void)[] = [];
  private readonly gauge;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(ALERT_SETTINGS) private readonly settings: AlertSettings,
    private readonly facts: FleetFactsReader,
    private readonly events: FleetEvents,
    private readonly presence: DevicePresence,
    metrics: MetricsRegistry,
  ) {
    this.gauge = metrics.gauge({ name: 'flotilla_fleet_health', help: 'Fleet health: 0 healthy, 1 degraded, 2 unhealthy.' });
  }

  onModuleInit(): void {
    for (const type of TRIGGERS) this.offs.push(this.events.on(type, () => this.soon()));
    this.soon();
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const off of this.offs) off();
    await this.pending.catch(() => undefined);
  }

  async assess(): Promise<FleetHealthView> {
    const [byStatus, reconnecting, deployments, openAlerts] = await Promise.all([
      this.db.prisma.device.groupBy({ by: ['status'], _count: { _all: true } }),
      this.presence.reconnectingDevices(),
      this.facts.deployments(),
      this.facts.openAlerts(),
    ]);
    // Reconnecting devices are stored online or draining: counted apart from those.
    const away = (status: DeviceStatus) => [...reconnecting.values()].filter((s) => s === status).length;
    const count = (status: DeviceStatus) => (byStatus.find((r) => r.status === status)?._count._all ?? 0) - away(status);
    const health = assessFleetHealth(
      {
        devices: { online: count('online'), reconnecting: reconnecting.size, offline: count('offline'), draining: count('draining'), revoked: count('revoked') },
        deployments: deployments.map((d) => ({ name: d.name, desired: d.replicas, ready: d.ready })),
        openAlerts,
      },
      { unhealthyOfflinePercent: this.settings.unhealthyOfflinePercent },
    );
    this.record(health.status);
    return { ...health, evaluatedAt: new Date().toISOString() };
  }

  async recommendations(now = new Date()): Promise<Recommendations> {
    const windowSeconds = this.settings.scaling.windowSeconds;
    const since = new Date(now.getTime() - windowSeconds * 1000);
    const [deployments, traffic, devices, telemetry] = await Promise.all([
      this.facts.deployments(),
      this.facts.traffic(since),
      this.facts.devices(),
      this.facts.telemetry(since),
    ]);
    const recommendations = recommendScaling({ windowSeconds, deployments, traffic, devices, telemetry }, this.settings.scaling, this.settings.thresholds);
    return { windowSeconds, generatedAt: now.toISOString(), recommendations };
  }

  private record(status: FleetHealthStatus): void {
    this.gauge.set(undefined, STATUS_VALUE[status]);
    if (status === this.last) return;
    const previous = this.last;
    this.last = status;
    this.logger.info({ status, previous }, 'fleet health changed');
    this.events.emit('fleet.health', { status, previous, at: new Date().toISOString() });
  }

  private soon(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.pending = this.assess().catch((error: unknown) => {
        if (!this.stopped) this.logger.warn({ err: error }, 'fleet health assessment failed');
      });
    }, DEBOUNCE_MS);
    this.timer.unref();
  }
}
