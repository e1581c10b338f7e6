import { Global, Module } from '@nestjs/common';
import { CONFIG } from '../app/tokens.js';
import type { ControlPlaneConfig } from '../config/config.js';
import { LoginThrottle } from './login-throttle.js';
import { RateLimitService } from './rate-limit.service.js';
import { RATE_LIMIT_SETTINGS } from './rate-limit.settings.js';

@Global()
@Module({
  providers: [
    RateLimitService,
    LoginThrottle,
    { provide: RATE_LIMIT_SETTINGS, useFactory: (config: ControlPlaneConfig) => config.rateLimit, inject: [CONFIG] },
  ],
  exports: [RateLimitService, LoginThrottle],
})
export class RateLimitModule {}
