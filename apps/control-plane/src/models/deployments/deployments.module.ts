import { Module } from '@nestjs/common';
import { AuditModule } from '../../identity/audit/audit.module.js';
import { PlacementModule } from '../placement/placement.module.js';
import { DeploymentsController } from './deployments.controller.js';
import { DeploymentsService } from './deployments.service.js';

@Module({ imports: [AuditModule, PlacementModule], controllers: [DeploymentsController], providers: [DeploymentsService], exports: [DeploymentsService] })
export class DeploymentsModule {}
