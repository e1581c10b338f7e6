import { Global, Module } from '@nestjs/common';
import { CONFIG } from '../tokens.js';
import { LoginThrottle } from './login-throttle.js';
import { RateLimitService } from './rate-limit.service.js';
import { RATE_LIMIT_SETTINGS, type RateLimitSettings } from './rate-limit.settings.js';
import { RATE_LIMIT_STORE } from './rate-limit.tokens.js';
import { InMemoryTokenBucketStore } from './token-bucket.js';

@Global()
@Module({
  providers: [
    RateLimitService,
    LoginThrottle,
    { provide: RATE_LIMIT_STORE, useFactory: () => new InMemoryTokenBucketStore() },
    { provide: RATE_LIMIT_SETTINGS, useFactory: (config: { rateLimit: RateLimitSettings }) => config.rateLimit, inject: [CONFIG] },
  ],
  exports: [RateLimitService, LoginThrottle],
})
export class RateLimitModule {}
