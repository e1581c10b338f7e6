import { Global, Module } from '@nestjs/common';
import { MetricsRegistry } from './metrics-registry.js';

/** The registry every domain registers its metrics with: a platform token, global. `/metrics` is observability's. */
@Global()
@Module({ providers: [MetricsRegistry], exports: [MetricsRegistry] })
export class MetricsRegistryModule {}
