import { Module } from '@nestjs/common';
import { DeviceIngestModule } from '../../devices/ingest/device-ingest.module.js';
import { CONFIG } from '../../platform/tokens.js';
import { AlertsController } from './alerts.controller.js';
import { AlertsService } from './alerts.service.js';
import { ALERT_SETTINGS, type AlertSettings } from './alert.settings.js';
import { FleetFactsReader } from './fleet-facts.js';

@Module({
  imports: [DeviceIngestModule],
  controllers: [AlertsController],
  providers: [AlertsService, FleetFactsReader, { provide: ALERT_SETTINGS, useFactory: (config: { alerts: AlertSettings }) => config.alerts, inject: [CONFIG] }],
  exports: [AlertsService, FleetFactsReader, ALERT_SETTINGS],
})
export class AlertsModule {}
