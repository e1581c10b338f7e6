import { Module } from '@nestjs/common';
import { GatewayAccounting } from './accounting.js';
import { DeviceDirectory } from './device-directory.js';
import { Dispatcher } from './dispatcher.js';
import { GatewayController } from './gateway.controller.js';
import { GatewayKeys } from './gateway-keys.js';
import { GatewayService } from './gateway.service.js';
import { GATEWAY_SETTINGS, loadGatewaySettings } from './gateway.settings.js';

/** The OpenAI-compatible inference gateway (`/v1`): see docs/gateway.md. */
@Module({
  controllers: [GatewayController],
  providers: [
    { provide: GATEWAY_SETTINGS, useFactory: () => loadGatewaySettings(process.env) },
    DeviceDirectory,
    Dispatcher,
    GatewayKeys,
    GatewayAccounting,
    GatewayService,
  ],
  exports: [GatewayService, DeviceDirectory, GatewayAccounting],
})
export class GatewayModule {}
