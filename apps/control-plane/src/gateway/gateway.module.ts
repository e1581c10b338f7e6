import { Module } from '@nestjs/common';
import { DeviceIngestModule } from '../devices/ingest/device-ingest.module.js';
import { CONFIG } from '../platform/tokens.js';
import { GatewayAccounting } from './accounting.js';
import { Balancer } from './balancer.js';
import { DeviceDirectory } from './device-directory.js';
import { Dispatcher } from './dispatcher.js';
import { GatewayController } from './gateway.controller.js';
import { GatewayKeys } from './gateway-keys.js';
import { GatewayMetrics } from './gateway-metrics.js';
import { GatewayService } from './gateway.service.js';
import { GatewayRouting } from './routing-policy.js';
import { GATEWAY_SETTINGS, type GatewaySettings } from './gateway.settings.js';

/** The OpenAI-compatible inference gateway (`/v1`): see docs/gateway.md. */
@Module({
  imports: [DeviceIngestModule],
  controllers: [GatewayController],
  providers: [
    { provide: GATEWAY_SETTINGS, useFactory: (config: { gateway: GatewaySettings }) => config.gateway, inject: [CONFIG] },
    { provide: Balancer, useFactory: (settings: GatewaySettings) => new Balancer(settings), inject: [GATEWAY_SETTINGS] },
    DeviceDirectory,
    Dispatcher,
    GatewayKeys,
    GatewayMetrics,
    GatewayRouting,
    GatewayAccounting,
    GatewayService,
  ],
  exports: [GatewayService, DeviceDirectory, GatewayAccounting, GatewayRouting],
})
export class GatewayModule {}
