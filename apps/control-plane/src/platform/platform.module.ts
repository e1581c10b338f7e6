import { type DynamicModule, Module } from '@nestjs/common';
import type { Logger } from 'pino';
import type { EmbeddedBroker } from './broker/embedded-broker.js';
import type { Database } from './database/index.js';
import type { ReadinessCheck } from './health/health.controller.js';
import { BROKER, CONFIG, DATABASE, ENDPOINTS, LOGGER, READINESS_CHECKS, type Endpoints } from './tokens.js';

/** The values of the platform tokens, built by the composition root before Nest starts. */
export interface PlatformParts {
  /** the composed config; each domain reads its own slice, typed where it injects CONFIG */
  config: object;
  logger: Logger;
  database: Database;
  broker: EmbeddedBroker;
  endpoints: Endpoints;
  readiness: ReadinessCheck[];
}

/** The platform tokens, global: the only providers every module sees without importing their module. */
@Module({})
export class PlatformModule {
  static register(parts: PlatformParts): DynamicModule {
    return {
      module: PlatformModule,
      global: true,
      providers: [
        { provide: CONFIG, useValue: parts.config },
        { provide: LOGGER, useValue: parts.logger },
        { provide: DATABASE, useValue: parts.database },
        { provide: BROKER, useValue: parts.broker },
        { provide: ENDPOINTS, useValue: parts.endpoints },
        { provide: READINESS_CHECKS, useValue: parts.readiness },
      ],
      exports: [CONFIG, LOGGER, DATABASE, BROKER, ENDPOINTS, READINESS_CHECKS],
    };
  }
}
