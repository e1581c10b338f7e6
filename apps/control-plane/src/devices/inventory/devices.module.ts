import { Module } from '@nestjs/common';
import { AuditModule } from '../../identity/audit/audit.module.js';
import { DeviceIngestModule } from '../ingest/device-ingest.module.js';
import { DevicesController } from './devices.controller.js';
import { DevicesService } from './devices.service.js';

@Module({ imports: [AuditModule, DeviceIngestModule], controllers: [DevicesController], providers: [DevicesService], exports: [DevicesService] })
export class DevicesModule {}
