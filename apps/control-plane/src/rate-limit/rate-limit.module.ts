import { Global, Module } from '@nestjs/common';
import { RateLimitService } from './rate-limit.service.js';
import { RATE_LIMIT_SETTINGS, loadRateLimitSettings } from './rate-limit.settings.js';
import { RATE_LIMIT_STORE } from './rate-limit.tokens.js';
import { InMemoryTokenBucketStore } from './token-bucket.js';

@Global()
@Module({
  providers: [
    RateLimitService,
    { provide: RATE_LIMIT_STORE, useFactory: () => new InMemoryTokenBucketStore() },
    { provide: RATE_LIMIT_SETTINGS, useFactory: () => loadRateLimitSettings() },
  ],
  exports: [RateLimitService],
})
export class RateLimitModule {}
