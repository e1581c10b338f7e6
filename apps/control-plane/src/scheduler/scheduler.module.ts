import { Module } from '@nestjs/common';
import { SchedulerController } from './scheduler.controller.js';
import { SchedulerService } from './scheduler.service.js';
import { SCHEDULER_SETTINGS, loadSchedulerSettings } from './scheduler.settings.js';

/** Placement: the planner run on fleet events and periodically, desired states published to devices. */
@Module({
  controllers: [SchedulerController],
  providers: [SchedulerService, { provide: SCHEDULER_SETTINGS, useFactory: () => loadSchedulerSettings() }],
  exports: [SchedulerService],
})
export class SchedulerModule {}
