import { Module } from '@nestjs/common';
import { RetentionService } from './retention.service.js';

/** The retention sweep over telemetry, device history and the gateway's request rows and rollups. */
@Module({ providers: [RetentionService] })
export class RetentionModule {}
