import { Module } from '@nestjs/common';
import { DeviceIngestModule } from '../../devices/ingest/device-ingest.module.js';
import { RequestRollupService } from './request-rollups.js';
import { UsageController } from './usage.controller.js';
import { UsageService } from './usage.service.js';

/** Gateway usage over a window and the request rollups it reads past the raw rows' retention. */
@Module({ imports: [DeviceIngestModule], controllers: [UsageController], providers: [UsageService, RequestRollupService], exports: [UsageService] })
export class UsageModule {}
