import { Module } from '@nestjs/common';
import { DeviceIngestModule } from '../../devices/ingest/device-ingest.module.js';
import { AlertsModule } from '../alerts/alerts.module.js';
import { FleetHealthController } from './fleet-health.controller.js';
import { FleetHealthService } from './fleet-health.service.js';

@Module({ imports: [DeviceIngestModule, AlertsModule], controllers: [FleetHealthController], providers: [FleetHealthService], exports: [FleetHealthService] })
export class FleetHealthModule {}
