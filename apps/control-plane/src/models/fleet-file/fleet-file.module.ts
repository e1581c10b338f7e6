import { Module } from '@nestjs/common';
import { AuditModule } from '../../identity/audit/audit.module.js';
import { CatalogModule } from '../catalog/catalog.module.js';
import { DeploymentsModule } from '../deployments/deployments.module.js';
import { PlacementModule } from '../placement/placement.module.js';
import { FleetFileController } from './fleet-file.controller.js';
import { FleetService } from './fleet-file.service.js';

/**
 * Models and placement as one feature: the catalog, deployments, the scheduler that places them, and the fleet file
 * that declares all of it. One entry in the app module.
 */
@Module({
  imports: [AuditModule, CatalogModule, DeploymentsModule, PlacementModule],
  controllers: [FleetFileController],
  providers: [FleetService],
  exports: [FleetService, CatalogModule, DeploymentsModule, PlacementModule],
})
export class FleetFileModule {}
