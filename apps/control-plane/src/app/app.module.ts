import { type DynamicModule, Module } from '@nestjs/common';
import type { Logger } from 'pino';
import { AuditModule } from '../identity/audit/audit.module.js';
import { AuthModule } from '../identity/auth/auth.module.js';
import type { EmbeddedBroker } from '../platform/broker/embedded-broker.js';
import type { ControlPlaneConfig } from './config.js';
import type { Database } from '../platform/database/index.js';
import { DevicesModule } from '../devices/inventory/devices.module.js';
import { type DeviceCredentialCache, DeviceCredentialsModule } from '../devices/inventory/device-credentials.js';
import { EnrollmentModule } from '../identity/enrollment/enrollment.module.js';
import { UsersModule } from '../identity/users/users.module.js';
import { EventsModule } from '../platform/events/events.module.js';
import type { ReadinessCheck } from '../platform/health/health.controller.js';
import { HealthModule } from '../platform/health/health.module.js';
import { GatewayModule } from '../gateway/gateway.module.js';
import { FleetFileModule } from '../models/fleet-file/fleet-file.module.js';
import { DeviceIngestModule } from '../devices/ingest/device-ingest.module.js';
import { AlertsModule } from '../observability/alerts/alerts.module.js';
import { FleetHealthModule } from '../observability/fleet-health/fleet-health.module.js';
import { MetricsModule } from '../observability/metrics/metrics.module.js';
import { OpenApiModule } from '../platform/openapi/openapi.module.js';
import { RateLimitModule } from '../platform/rate-limit/rate-limit.module.js';
import { RetentionModule } from '../observability/retention/retention.module.js';
import { UsageModule } from '../observability/usage/usage.module.js';
import { StreamModule } from '../observability/stream/stream.module.js';
import type { Endpoints } from '../platform/tokens.js';
import { PlatformModule } from '../platform/platform.module.js';
import { MetricsRegistryModule } from '../platform/metrics/metrics-registry.module.js';

/** The external parts, started before Nest so port and database problems fail fast and clearly. */
export interface AppParts {
  config: ControlPlaneConfig;
  logger: Logger;
  database: Database;
  broker: EmbeddedBroker;
  endpoints: Endpoints;
  /** the broker's credential cache, which revocation invalidates */
  credentials: DeviceCredentialCache;
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
      imports: [
        // Platform: the global tokens and the shared infrastructure every domain uses.
        PlatformModule.register({ config: parts.config, logger: parts.logger, database: parts.database, broker: parts.broker, endpoints: parts.endpoints, readiness }),
        MetricsRegistryModule,
        DeviceCredentialsModule.register(parts.credentials),
        // Feature modules: add one line per module; each imports the modules it uses.
        EventsModule,
        AuditModule,
        AuthModule,
        HealthModule,
        EnrollmentModule,
        UsersModule,
        DevicesModule,
        GatewayModule,
        FleetFileModule,
        DeviceIngestModule,
        MetricsModule,
        RateLimitModule,
        OpenApiModule,
        StreamModule,
        AlertsModule,
        FleetHealthModule,
        UsageModule,
        RetentionModule,
      ],
    };
  }
}
