import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import { BROKER, CONFIG, DATABASE, LOGGER } from '../../platform/tokens.js';

export interface FleetSizeConfig {
  database: { pgliteDeviceLimit: number };
}

/** How often the connected-device count is compared with the limit (a field read: cheap). */
const CHECK_INTERVAL_MS = 30_000;
/** Warn again only after the fleet fell below this share of the limit. */
const REARM_SHARE = 0.9;

/**
 * The embedded PGlite runs on the control plane's one thread and holds a measured number of devices
 * (FLOTILLA_PGLITE_DEVICE_LIMIT, docs/benchmarks.md); past it connects, telemetry and the API slow down for every
 * device. Warns at start when more devices are enrolled than that, and when more are connected, with what to do.
 */
@Injectable()
export class FleetSizeAdvisor implements OnApplicationBootstrap, OnModuleDestroy {
  private timer: NodeJS.Timeout | undefined;
  private warned = false;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(CONFIG) private readonly config: FleetSizeConfig,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  private get limit(): number {
    return this.config.database.pgliteDeviceLimit;
  }

  private get watching(): boolean {
    return this.db.backend === 'pglite' && this.limit > 0;
  }

  async onApplicationBootstrap(): Promise<void> {
    if (!this.watching) return;
    const enrolled = await this.db.prisma.device.count({ where: { status: { not: 'revoked' } } });
    if (enrolled > this.limit) this.warn('enrolled', enrolled);
    this.timer = setInterval(() => this.check(), CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  onModuleDestroy(): void {
    clearInterval(this.timer);
  }

  /** compares the connected devices with the limit (public so tests need not wait for the interval) */
  check(): void {
    if (!this.watching || this.broker.closed) return;
    const connected = this.broker.connectedClients;
    if (connected > this.limit && !this.warned) this.warn('connected', connected);
    else if (connected < this.limit * REARM_SHARE) this.warned = false;
  }

  private warn(what: 'enrolled' | 'connected', devices: number): void {
    this.warned = true;
    this.logger.warn(
      { devices, limit: this.limit, database: 'pglite' },
      `${devices} devices ${what}: more than the embedded PGlite database holds well (${this.limit}, measured on a 2-core box; ` +
        'docs/benchmarks.md). Connects, telemetry and the API will slow down. Move to PostgreSQL (DATABASE_URL=postgresql://...), ' +
        'or set FLOTILLA_PGLITE_DEVICE_LIMIT to change this warning (0 turns it off).',
    );
  }
}
