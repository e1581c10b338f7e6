import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { OpenApiController } from './openapi.controller.js';
import { OpenApiService } from './openapi.service.js';
import { RouteCatalog } from './route-catalog.js';

@Module({
  imports: [DiscoveryModule],
  controllers: [OpenApiController],
  providers: [OpenApiService, RouteCatalog],
  exports: [OpenApiService, RouteCatalog],
})
export class OpenApiModule {}
