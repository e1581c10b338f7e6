import { Module } from '@nestjs/common';
import { AlertsController } from './alerts.controller.js';
import { AlertsService } from './alerts.service.js';
import { ALERT_SETTINGS, loadAlertSettings } from './alert.settings.js';
import { FleetFactsReader } from './fleet-facts.js';

@Module({
  controllers: [AlertsController],
  providers: [AlertsService, FleetFactsReader, { provide: ALERT_SETTINGS, useFactory: () => loadAlertSettings() }],
  exports: [AlertsService, FleetFactsReader, ALERT_SETTINGS],
})
export class AlertsModule {}
