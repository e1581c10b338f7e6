import { Module } from '@nestjs/common';
import { AlertsModule } from '../alerts/alerts.module.js';
import { DeviceIngestModule } from '../../devices/ingest/device-ingest.module.js';
import { CONFIG } from '../../platform/tokens.js';
import { FleetMetrics } from './fleet-metrics.js';
import { HttpMetrics } from './http-metrics.js';
import { MetricsController } from './metrics.controller.js';
import { METRICS_SETTINGS, type MetricsSettings } from './metrics.settings.js';
import { RetiredSeries } from './retired-series.js';

/** `/metrics` (the registry itself is platform's MetricsRegistryModule), the HTTP metrics and the fleet gauges. */
@Module({
  controllers: [MetricsController],
  imports: [DeviceIngestModule, AlertsModule],
  providers: [HttpMetrics, FleetMetrics, RetiredSeries, { provide: METRICS_SETTINGS, useFactory: (config: { metrics: MetricsSettings }) => config.metrics, inject: [CONFIG] }],
  exports: [HttpMetrics, FleetMetrics],
})
export class MetricsModule {}
