import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FleetFactsReader } from '../../src/observability/alerts/fleet-facts.js';
import { EmbeddedBroker } from '../../src/platform/broker/embedded-broker.js';
import { DevicePresence } from '../../src/devices/ingest/device-presence.js';
import type { Prisma } from '../../src/generated/prisma/client.js';
import { describeBackends, openTestDatabase, type TestDatabase } from '../support/databases.js';

/** The queries behind alerts, fleet health and recommendations, on a bare database (no scheduler moving rows). */
describeBackends('fleet facts', (backend) => {
  let db: TestDatabase;
  let facts: FleetFactsReader;
  let presence: DevicePresence;
  let broker: EmbeddedBroker | undefined;
  beforeAll(async () => {
    db = await openTestDatabase(backend);
    // No device connects: only those the test says were heard from are back on this "process".
    broker = await EmbeddedBroker.start({
      host: '127.0.0.1',
      port: 0,
      keepaliveLimitSeconds: 60,
      maxMessageBytes: 1024,
      security: { authenticate: () => Promise.resolve(null), canPublish: () => false, canSubscribe: () => false },
      logger: pino({ level: 'silent' }),
    });
    presence = new DevicePresence(db.database, broker);
    facts = new FleetFactsReader(db.database, presence);
  });
  afterAll(async () => {
    await broker?.close();
    await db?.dispose();
  });

  it('counts a replica ready only when placed on an online device, back since the start, that reports the model ready', async () => {
    const prisma = db.database.prisma;
    const model = await prisma.model.create({
      data: { name: 'tiny', sourceUrl: 'file:///tiny.gguf', sha256: 'a'.repeat(64), sizeBytes: 1000n, quantization: 'Q8_0', memoryBytes: 1000n, contextLength: 2048, tier: 'small' },
    });
    const deployment = await prisma.deployment.create({ data: { name: 'chat', modelId: model.id, replicas: 3, parallel: 2 } });
    const hardware = { memory: { totalBytes: 8e9, freeBytes: 1e9 }, gpus: [{ name: 'a', vramBytes: 2e9 }, { name: 'b', vramBytes: 1e9 }] } as Prisma.InputJsonValue;
    const [ready, loading, down, stale] = await Promise.all(
      (['online', 'online', 'offline', 'online'] as const).map((status, i) => prisma.device.create({ data: { name: `d${i}`, status, hardware } })),
    );
    // `stale` is stored online by an earlier process and never came back: reconnecting, its ready report is old news.
    for (const device of [ready, loading]) presence.noteHeard(device?.id ?? '');
    for (const device of [ready, loading, down, stale]) {
      if (!device) throw new Error('device');
      await prisma.placement.create({ data: { deviceId: device.id, modelId: model.id, deploymentId: deployment.id, desiredVersion: 1 } });
    }
    await prisma.modelState.createMany({
      data: [
        { deviceId: ready?.id ?? '', modelName: 'tiny', state: 'ready', loaded: true },
        { deviceId: loading?.id ?? '', modelName: 'tiny', state: 'loading' },
        { deviceId: down?.id ?? '', modelName: 'tiny', state: 'ready', loaded: true },
        { deviceId: stale?.id ?? '', modelName: 'tiny', state: 'ready', loaded: true },
      ],
    });
    expect(await facts.deployments()).toEqual([
      { id: deployment.id, name: 'chat', model: 'tiny', replicas: 3, parallel: 2, placedDeviceIds: expect.arrayContaining([ready?.id, loading?.id, down?.id, stale?.id]), ready: 1 },
    ]);
    const devices = await facts.devices();
    expect(devices.find((d) => d.id === ready?.id)).toMatchObject({ memoryTotalBytes: 8e9, vramTotalBytes: 3e9, status: 'online' });
  });

  it('aggregates gateway requests per model over the window: p95 latency, failures, busy time; cancelled left out', async () => {
    const now = Date.now();
    await db.database.prisma.inferenceRequest.createMany({
      data: [
        ...Array.from({ length: 100 }, (_, i) => ({
          requestId: `a-${i}`,
          requestedModel: 'auto',
          model: 'tiny',
          latencyMs: i + 1,
          outcome: i < 7 ? ('failed' as const) : i < 10 ? ('timeout' as const) : ('success' as const),
          createdAt: new Date(now - 1000),
        })),
        { requestId: 'c-1', requestedModel: 'tiny', model: 'tiny', latencyMs: 99_999, outcome: 'cancelled' as const, createdAt: new Date(now - 1000) },
        { requestId: 'old', requestedModel: 'tiny', model: 'tiny', latencyMs: 99_999, outcome: 'failed' as const, createdAt: new Date(now - 3_600_000) },
        { requestId: 'none', requestedModel: 'big', model: null, latencyMs: null, outcome: 'failed' as const, createdAt: new Date(now - 1000) },
      ],
    });
    const traffic = await facts.traffic(new Date(now - 300_000));
    expect(traffic).toEqual([
      { model: 'big', requests: 1, failures: 1, latencyP95Ms: null, busyMs: 0 },
      { model: 'tiny', requests: 100, failures: 10, latencyP95Ms: expect.closeTo(95.05, 5), busyMs: 5050 },
    ]);
  });

  it('reads minute telemetry rollups overlapping the window', async () => {
    const prisma = db.database.prisma;
    const device = await prisma.device.create({ data: { name: 'tele' } });
    const now = Date.now();
    const minute = Math.floor(now / 60_000) * 60_000;
    const row = (bucketStart: number, bucketSeconds = 60) => ({
      deviceId: device.id,
      bucketStart: new Date(bucketStart),
      bucketSeconds,
      samples: 6,
      queueAvg: 3,
      expiresAt: new Date(now + 86_400_000),
    });
    await prisma.telemetryRollup.createMany({ data: [row(minute), row(minute - 240_000), row(minute - 600_000), row(minute - 3_600_000, 3600)] });
    const rows = (await facts.telemetry(new Date(now - 300_000))).filter((r) => r.deviceId === device.id);
    expect(rows).toHaveLength(2);
  });
});
