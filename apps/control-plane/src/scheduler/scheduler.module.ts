import { Module } from '@nestjs/common';
import { CONFIG } from '../app/tokens.js';
import type { ControlPlaneConfig } from '../config/config.js';
import { SchedulerController } from './scheduler.controller.js';
import { SchedulerService } from './scheduler.service.js';
import { SCHEDULER_SETTINGS } from './scheduler.settings.js';

/** Placement: the planner run on fleet events and periodically, desired states published to devices. */
@Module({
  controllers: [SchedulerController],
  providers: [SchedulerService, { provide: SCHEDULER_SETTINGS, useFactory: (config: ControlPlaneConfig) => config.scheduler, inject: [CONFIG] }],
  exports: [SchedulerService],
})
export class SchedulerModule {}
