import { Module } from '@nestjs/common';
import { CONFIG } from '../../platform/tokens.js';
import { SchedulerController } from './placement.controller.js';
import { SchedulerService } from './placement.service.js';
import { SCHEDULER_SETTINGS, type SchedulerSettings } from './placement.settings.js';

/** Placement: the planner run on fleet events and periodically, desired states published to devices. */
@Module({
  controllers: [SchedulerController],
  providers: [SchedulerService, { provide: SCHEDULER_SETTINGS, useFactory: (config: { scheduler: SchedulerSettings }) => config.scheduler, inject: [CONFIG] }],
  exports: [SchedulerService],
})
export class SchedulerModule {}
