import { Module } from '@nestjs/common';
import { DeviceIngestModule } from '../../devices/ingest/device-ingest.module.js';
import { RetentionService } from './retention.service.js';

/** The retention sweep over telemetry, device history and the gateway's request rows and rollups. */
@Module({ imports: [DeviceIngestModule], providers: [RetentionService] })
export class RetentionModule {}
