import { Module } from '@nestjs/common';
import { SchedulerModule } from '../placement/placement.module.js';
import { DeploymentsController } from './deployments.controller.js';
import { DeploymentsService } from './deployments.service.js';

@Module({ imports: [SchedulerModule], controllers: [DeploymentsController], providers: [DeploymentsService], exports: [DeploymentsService] })
export class DeploymentsModule {}
