import { Global, Module } from '@nestjs/common';
import { CONFIG } from '../tokens.js';
import { LoginThrottle } from './login-throttle.js';
import { RateLimitService } from './rate-limit.service.js';
import { RATE_LIMIT_SETTINGS, type RateLimitSettings } from './rate-limit.settings.js';

@Global()
@Module({
  providers: [
    RateLimitService,
    LoginThrottle,
    { provide: RATE_LIMIT_SETTINGS, useFactory: (config: { rateLimit: RateLimitSettings }) => config.rateLimit, inject: [CONFIG] },
  ],
  exports: [RateLimitService, LoginThrottle],
})
export class RateLimitModule {}
