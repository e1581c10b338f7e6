import { Module } from '@nestjs/common';
import { RequestRollupService } from './request-rollups.js';
import { UsageController } from './usage.controller.js';
import { UsageService } from './usage.service.js';

/** Gateway usage over a window and the request rollups it reads past the raw rows' retention. */
@Module({ controllers: [UsageController], providers: [UsageService, RequestRollupService], exports: [UsageService] })
export class UsageModule {}
