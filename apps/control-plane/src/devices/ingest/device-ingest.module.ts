import { Module } from '@nestjs/common';
import { CONFIG } from '../../platform/tokens.js';
import { DevicePresence } from './device-presence.js';
import { DeviceQueue } from './device-queue.js';
import { DeviceWriteBatcher } from './device-writes.js';
import { FleetSizeAdvisor } from './fleet-size-advisor.js';
import { IngestStats } from './ingest-stats.js';
import { DeviceLivenessService } from './liveness.service.js';
import { ModelStateService } from './model-state.service.js';
import { MqttIngestService } from './mqtt-ingest.service.js';
import { OutboxIngestService } from './outbox-ingest.service.js';
import { REGISTRY_SETTINGS, type RegistrySettings } from './device-ingest.settings.js';
import { TelemetryCache } from './telemetry-cache.js';

/**
 * Device ingest and liveness: MQTT hello/status/telemetry/events/usage/model states into the database. Exports what
 * the device REST, placement, the gateway and observability read (presence, liveness, telemetry cache, queue, stats).
 */
@Module({
  providers: [
    { provide: REGISTRY_SETTINGS, useFactory: (config: { registry: RegistrySettings }) => config.registry, inject: [CONFIG] },
    IngestStats,
    DeviceQueue,
    DevicePresence,
    TelemetryCache,
    DeviceWriteBatcher,
    OutboxIngestService,
    DeviceLivenessService,
    ModelStateService,
    MqttIngestService,
    FleetSizeAdvisor,
  ],
  exports: [REGISTRY_SETTINGS, IngestStats, DeviceQueue, DevicePresence, TelemetryCache, DeviceLivenessService],
})
export class DeviceIngestModule {}
