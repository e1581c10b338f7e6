import { Module } from '@nestjs/common';
import { CONFIG } from '../../platform/tokens.js';
import type { ControlPlaneConfig } from '../../app/config.js';
import { SchedulerController } from './placement.controller.js';
import { SchedulerService } from './placement.service.js';
import { SCHEDULER_SETTINGS } from './placement.settings.js';

/** Placement: the planner run on fleet events and periodically, desired states published to devices. */
@Module({
  controllers: [SchedulerController],
  providers: [SchedulerService, { provide: SCHEDULER_SETTINGS, useFactory: (config: ControlPlaneConfig) => config.scheduler, inject: [CONFIG] }],
  exports: [SchedulerService],
})
export class SchedulerModule {}
