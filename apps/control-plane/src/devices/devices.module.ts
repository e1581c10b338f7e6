import { Module } from '@nestjs/common';
import { RegistryModule } from '../registry/registry.module.js';
import { DevicesController } from './devices.controller.js';
import { DevicesService } from './devices.service.js';

@Module({ imports: [RegistryModule], controllers: [DevicesController], providers: [DevicesService], exports: [DevicesService] })
export class DevicesModule {}
