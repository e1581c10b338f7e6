import { Module } from '@nestjs/common';
import { IdentityController } from './users.controller.js';
import { IdentityService } from './users.service.js';

@Module({ controllers: [IdentityController], providers: [IdentityService] })
export class IdentityModule {}
