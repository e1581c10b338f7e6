import { Global, Module } from '@nestjs/common';
import { CONFIG } from '../../platform/tokens.js';
import { FleetMetrics } from './fleet-metrics.js';
import { HttpMetrics } from './http-metrics.js';
import { MetricsController } from './metrics.controller.js';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';
import { METRICS_SETTINGS, type MetricsSettings } from './metrics.settings.js';

/** `/metrics` and the registry every module registers its metrics with (global: inject `MetricsRegistry`). */
@Global()
@Module({
  controllers: [MetricsController],
  providers: [MetricsRegistry, HttpMetrics, FleetMetrics, { provide: METRICS_SETTINGS, useFactory: (config: { metrics: MetricsSettings }) => config.metrics, inject: [CONFIG] }],
  exports: [MetricsRegistry, FleetMetrics],
})
export class MetricsModule {}
