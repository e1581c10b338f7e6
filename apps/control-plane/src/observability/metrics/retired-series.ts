import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from '../../platform/tokens.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';

/**
 * Removes the series of devices and models that are gone, from every metric labelled `device` or `model`: a revoked
 * device (revocation is final: its id never comes back) and a model deleted from the catalog. Without this their
 * counters and histograms would stay in every scrape for the life of the process. Gauges refreshed at scrape time
 * follow their source (e.g. the gateway's balancer) on their own.
 */
@Injectable()
export class RetiredSeries implements OnModuleInit, OnModuleDestroy {
  private readonly unsubscribers: (() => void)[] = [];

  constructor(
    private readonly registry: MetricsRegistry,
    private readonly events: FleetEvents,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  onModuleInit(): void {
    this.unsubscribers.push(
      this.events.on('device.status', ({ deviceId, status }) => {
        if (status === 'revoked') this.remove({ device: deviceId });
      }),
      this.events.on('catalog.changed', ({ name, action }) => {
        if (action === 'deleted') this.remove({ model: name });
      }),
    );
  }

  onModuleDestroy(): void {
    for (const unsubscribe of this.unsubscribers.splice(0)) unsubscribe();
  }

  private remove(match: Record<string, string>): void {
    this.registry.removeSeries(match).catch((error: unknown) => this.logger.warn({ err: error, match }, 'metrics: removing series failed'));
  }
}
