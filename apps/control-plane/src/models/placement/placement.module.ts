import { Module } from '@nestjs/common';
import { DeviceIngestModule } from '../../devices/ingest/device-ingest.module.js';
import { CONFIG } from '../../platform/tokens.js';
import { PlacementController } from './placement.controller.js';
import { PlacementService } from './placement.service.js';
import { SCHEDULER_SETTINGS, type SchedulerSettings } from './placement.settings.js';

/** Placement: the planner run on fleet events and periodically, desired states published to devices. */
@Module({
  imports: [DeviceIngestModule],
  controllers: [PlacementController],
  providers: [PlacementService, { provide: SCHEDULER_SETTINGS, useFactory: (config: { scheduler: SchedulerSettings }) => config.scheduler, inject: [CONFIG] }],
  exports: [PlacementService],
})
export class PlacementModule {}
