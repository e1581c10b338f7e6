import { Module } from '@nestjs/common';
import { AlertsModule } from '../alerts/alerts.module.js';
import { FleetController } from './fleet-health.controller.js';
import { FleetHealthService } from './fleet-health.service.js';

@Module({ imports: [AlertsModule], controllers: [FleetController], providers: [FleetHealthService], exports: [FleetHealthService] })
export class HealthScoreModule {}
