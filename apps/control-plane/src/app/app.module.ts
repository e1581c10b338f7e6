import { type DynamicModule, Module } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditModule } from '../identity/audit/audit.module.js';
import { AuthModule } from '../identity/auth/auth.module.js';
import type { EmbeddedBroker } from '../platform/broker/embedded-broker.js';
import type { ControlPlaneConfig } from './config.js';
import type { Database } from '../platform/database/index.js';
import { DevicesModule } from '../devices/inventory/devices.module.js';
import { EnrollmentModule } from '../identity/enrollment/enrollment.module.js';
import { IdentityModule } from '../identity/users/users.module.js';
import { EventsModule } from '../platform/events/events.module.js';
import type { ReadinessCheck } from '../platform/health/health.controller.js';
import { HealthModule } from '../platform/health/health.module.js';
import { GatewayModule } from '../gateway/gateway.module.js';
import { FleetModule } from '../models/fleet-file/fleet-file.module.js';
import { RegistryModule } from '../devices/ingest/device-ingest.module.js';
import { AlertsModule } from '../observability/alerts/alerts.module.js';
import { AuditLogModule } from '../identity/audit/audit-log.module.js';
import { HealthScoreModule } from '../observability/fleet-health/fleet-health.module.js';
import { MetricsModule } from '../observability/metrics/metrics.module.js';
import { OpenApiModule } from '../platform/openapi/openapi.module.js';
import { RateLimitModule } from '../platform/rate-limit/rate-limit.module.js';
import { RetentionModule } from '../observability/retention/retention.module.js';
import { UsageModule } from '../observability/usage/usage.module.js';
import { StreamModule } from '../observability/stream/stream.module.js';
import { BROKER, CONFIG, DATABASE, ENDPOINTS, LOGGER, READINESS_CHECKS, type Endpoints } from '../platform/tokens.js';

/** The external parts, started before Nest so port and database problems fail fast and clearly. */
export interface AppParts {
  config: ControlPlaneConfig;
  logger: Logger;
  database: Database;
  broker: EmbeddedBroker;
  endpoints: Endpoints;
}

@Module({})
export class AppModule {
  static register(parts: AppParts): DynamicModule {
    const readiness: ReadinessCheck[] = [
      {
        name: 'database',
        check: async () => {
          await parts.database.prisma.$queryRaw`SELECT 1`;
        },
      },
      {
        name: 'broker',
        check: () => (parts.broker.closed ? Promise.reject(new Error('broker closed')) : Promise.resolve()),
      },
    ];
    return {
      module: AppModule,
      global: true,
      imports: [
        // Feature modules: add one line per module.
        EventsModule,
        AuditModule,
        AuthModule,
        HealthModule,
        EnrollmentModule,
        IdentityModule,
        DevicesModule,
        GatewayModule,
        FleetModule,
        RegistryModule,
        MetricsModule,
        RateLimitModule,
        OpenApiModule,
        StreamModule,
        AlertsModule,
        HealthScoreModule,
        AuditLogModule,
        UsageModule,
        RetentionModule,
      ],
      providers: [
        { provide: CONFIG, useValue: parts.config },
        { provide: LOGGER, useValue: parts.logger },
        { provide: DATABASE, useValue: parts.database },
        { provide: BROKER, useValue: parts.broker },
        { provide: ENDPOINTS, useValue: parts.endpoints },
        { provide: READINESS_CHECKS, useValue: readiness },
      ],
      exports: [CONFIG, LOGGER, DATABASE, BROKER, ENDPOINTS, READINESS_CHECKS],
    };
  }
}
