import { afterAll, beforeAll, expect, it } from 'vitest';
import { Prisma, type PrismaClient } from '../../src/generated/prisma/client.js';
import { describeBackends, openTestDatabase, type TestDatabase } from '../support/databases.js';

const SHA = 'a'.repeat(64);
const GIB = 1024n ** 3n;

function knownError(code: string) {
  return expect.objectContaining({ name: 'PrismaClientKnownRequestError', code });
}

/** Every model through the generated client on the migrated database: the migrations and the client agree. */
describeBackends('Prisma client on the migrated database', (backend) => {
  let db: TestDatabase;
  let prisma: PrismaClient;

  beforeAll(async () => {
    db = await openTestDatabase(backend);
    prisma = db.database.prisma;
  });
  afterAll(() => db?.dispose());

  it('reports the backend it runs on and answers a ping', async () => {
    expect(db.database.backend).toBe(backend);
    await db.database.ping();
  });

  it('devices: defaults, JSON, enums, credentials, outbox cursor, cascade delete', async () => {
    const device = await prisma.device.create({
      data: {
        name: 'kiosk-1',
        labels: { site: 'paris', 'gpu.kind': 'none' },
        hardware: { cpu: { cores: 4 }, memory: { totalBytes: 8 * 1024 ** 3 }, gpus: [] },
        credentials: { create: { mqttUsername: 'kiosk-1-user', secretHash: 'h1' } },
        outboxCursor: { create: {} },
      },
      include: { credentials: true, outboxCursor: true },
    });
    expect(device.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(device).toMatchObject({
      status: 'offline',
      desiredVersion: 0,
      reportedDesiredVersion: 0,
      limits: null,
      agentVersion: null,
      lastSeenAt: null,
      labels: { site: 'paris', 'gpu.kind': 'none' },
    });
    expect(device.createdAt).toBeInstanceOf(Date);
    expect(device.credentials).toHaveLength(1);
    expect(device.outboxCursor?.lastAckedSeq).toBe(0n);

    const seen = new Date('2026-11-24T10:00:00.123Z');
    const updated = await prisma.device.update({
      where: { id: device.id },
      data: {
        status: 'online',
        lastSeenAt: seen,
        agentVersion: '0.1.0',
        limits: { maxParallelRequests: 4, maxQueueLength: 100 },
        desiredVersion: { increment: 1 },
        outboxCursor: { update: { lastAckedSeq: 9_007_199_254_740_993n } },
      },
      include: { outboxCursor: true },
    });
    expect(updated).toMatchObject({ status: 'online', agentVersion: '0.1.0', desiredVersion: 1 });
    expect(updated.lastSeenAt?.toISOString()).toBe('2026-11-24T10:00:00.123Z');
    expect(updated.outboxCursor?.lastAckedSeq).toBe(9_007_199_254_740_993n);
    expect(updated.updatedAt.getTime()).toBeGreaterThanOrEqual(device.updatedAt.getTime());

    // JSON filters work on labels.
    const bySite = await prisma.device.findMany({ where: { labels: { path: ['site'], equals: 'paris' } } });
    expect(bySite.map((d) => d.id)).toEqual([device.id]);

    await expect(
      prisma.deviceCredential.create({ data: { deviceId: device.id, mqttUsername: 'kiosk-1-user', secretHash: 'h2' } }),
    ).rejects.toEqual(knownError('P2002'));
    await expect(
      prisma.deviceCredential.create({ data: { deviceId: 'no-such-device', mqttUsername: 'x', secretHash: 'h' } }),
    ).rejects.toEqual(knownError('P2003'));

    const revoked = await prisma.deviceCredential.update({
      where: { mqttUsername: 'kiosk-1-user' },
      data: { revokedAt: new Date() },
      include: { device: { select: { status: true } } },
    });
    expect(revoked.revokedAt).toBeInstanceOf(Date);
    expect(revoked.device.status).toBe('online');

    await prisma.device.delete({ where: { id: device.id } });
    expect(await prisma.deviceCredential.count({ where: { deviceId: device.id } })).toBe(0);
    expect(await prisma.deviceOutboxCursor.count({ where: { deviceId: device.id } })).toBe(0);
  });

  it('users, sessions, API keys and enrollment tokens: unique e-mails, arrays, SET NULL on user delete', async () => {
    const user = await prisma.user.create({ data: { email: 'ops@example.com', passwordHash: 'argon2id$...' } });
    expect(user.role).toBe('viewer');
    await expect(prisma.user.create({ data: { email: 'ops@example.com', passwordHash: 'x' } })).rejects.toEqual(
      knownError('P2002'),
    );
    const admin = await prisma.user.update({ where: { email: 'ops@example.com' }, data: { role: 'admin', lastLoginAt: new Date() } });
    expect(admin.role).toBe('admin');

    const session = await prisma.session.create({
      data: { userId: user.id, tokenHash: 'session-hash', expiresAt: new Date(Date.now() + 3_600_000) },
    });
    const found = await prisma.session.findUnique({ where: { tokenHash: 'session-hash' }, include: { user: true } });
    expect(found?.user.email).toBe('ops@example.com');

    const gatewayKey = await prisma.apiKey.create({
      data: {
        name: 'kiosk app',
        prefix: 'flk_abc123',
        keyHash: 'key-hash',
        scope: 'gateway',
        modelAllowList: ['qwen2.5-0.5b', 'phi-4-mini'],
        rateLimitPerMinute: 600,
        createdById: user.id,
      },
    });
    expect(gatewayKey).toMatchObject({ role: null, modelAllowList: ['qwen2.5-0.5b', 'phi-4-mini'], revokedAt: null });
    const adminKey = await prisma.apiKey.create({
      data: { name: 'ci', prefix: 'flk_def456', keyHash: 'k2', scope: 'admin', role: 'operator' },
    });
    expect(adminKey.modelAllowList).toEqual([]);
    const allowing = await prisma.apiKey.findMany({ where: { modelAllowList: { has: 'phi-4-mini' } } });
    expect(allowing.map((k) => k.id)).toEqual([gatewayKey.id]);
    await prisma.apiKey.update({ where: { id: gatewayKey.id }, data: { lastUsedAt: new Date(), modelAllowList: { push: 'auto' } } });
    expect((await prisma.apiKey.findUniqueOrThrow({ where: { prefix: 'flk_abc123' } })).modelAllowList).toEqual([
      'qwen2.5-0.5b',
      'phi-4-mini',
      'auto',
    ]);

    const token = await prisma.enrollmentToken.create({
      data: {
        tokenHash: 'enroll-hash',
        prefix: 'fle_123',
        expiresAt: new Date(Date.now() + 86_400_000),
        remainingUses: 2,
        labels: { site: 'lyon' },
        createdById: user.id,
      },
    });
    // The enrollment service spends a use with a single conditional update.
    const spend = () =>
      prisma.enrollmentToken.updateManyAndReturn({
        where: { tokenHash: 'enroll-hash', revokedAt: null, expiresAt: { gt: new Date() }, remainingUses: { gt: 0 } },
        data: { remainingUses: { decrement: 1 } },
      });
    expect((await spend())[0]?.remainingUses).toBe(1);
    expect((await spend())[0]?.remainingUses).toBe(0);
    expect(await spend()).toEqual([]);

    await prisma.user.delete({ where: { id: user.id } });
    expect(await prisma.session.findUnique({ where: { id: session.id } })).toBeNull();
    expect((await prisma.apiKey.findUniqueOrThrow({ where: { id: gatewayKey.id } })).createdById).toBeNull();
    expect((await prisma.enrollmentToken.findUniqueOrThrow({ where: { id: token.id } })).createdById).toBeNull();
    await prisma.apiKey.deleteMany({ where: { id: { in: [gatewayKey.id, adminKey.id] } } });
    await prisma.enrollmentToken.delete({ where: { id: token.id } });
  });

  it('models, deployments and placements: BigInt sizes, unique names, RESTRICT and CASCADE', async () => {
    const model = await prisma.model.create({
      data: {
        name: 'qwen2.5-7b-instruct-q8_0',
        sourceUrl: 'https://models.example/qwen-7b.gguf',
        sha256: SHA,
        sizeBytes: 7n * GIB,
        quantization: 'Q8_0',
        memoryBytes: 8n * GIB,
        contextLength: 4096,
        tier: 'large',
      },
    });
    expect(model.sizeBytes).toBe(7n * GIB);
    await expect(prisma.model.create({ data: { ...model, id: undefined } })).rejects.toEqual(knownError('P2002'));

    const device = await prisma.device.create({ data: { name: 'gw-1', labels: { tier: 'large' } } });
    const deployment = await prisma.deployment.create({
      data: {
        name: 'qwen-large',
        modelId: model.id,
        replicas: 2,
        labelSelector: { tier: 'large' },
        pinnedDeviceIds: [device.id],
      },
    });
    expect(deployment).toMatchObject({ parallel: 1, contextSize: null, pinnedDeviceIds: [device.id] });

    const placed = await prisma.$transaction(async (tx) => {
      const { desiredVersion } = await tx.device.update({
        where: { id: device.id },
        data: { desiredVersion: { increment: 1 } },
        select: { desiredVersion: true },
      });
      return tx.placement.create({
        data: { deviceId: device.id, modelId: model.id, deploymentId: deployment.id, desiredVersion, pinned: true },
      });
    });
    expect(placed).toMatchObject({ desiredVersion: 1, loaded: true, pinned: true, parallel: 1 });
    await expect(
      prisma.placement.create({ data: { deviceId: device.id, modelId: model.id, desiredVersion: 2 } }),
    ).rejects.toEqual(knownError('P2002'));

    const withRelations = await prisma.device.findUniqueOrThrow({
      where: { id: device.id },
      include: { placements: { include: { model: true, deployment: true } } },
    });
    expect(withRelations.placements[0]?.model.tier).toBe('large');
    expect(withRelations.placements[0]?.deployment?.name).toBe('qwen-large');
    expect(await prisma.placement.findMany({ where: { model: { tier: 'large' } } })).toHaveLength(1);

    // A model in use by a deployment cannot be deleted; deleting the deployment removes its placements.
    await expect(prisma.model.delete({ where: { id: model.id } })).rejects.toEqual(knownError('P2003'));
    await prisma.deployment.delete({ where: { id: deployment.id } });
    expect(await prisma.placement.count({ where: { deviceId: device.id } })).toBe(0);
    await prisma.model.delete({ where: { name: model.name } });
    await prisma.device.delete({ where: { id: device.id } });
  });

  it('model states: composite key upserts, enum filters, BigInt progress', async () => {
    const device = await prisma.device.create({ data: { name: 'clinic-pc' } });
    const key = { deviceId_modelName: { deviceId: device.id, modelName: 'phi-4-mini-q4_k_m' } };
    await prisma.modelState.upsert({
      where: key,
      create: {
        deviceId: device.id,
        modelName: 'phi-4-mini-q4_k_m',
        state: 'downloading',
        progress: 0.25,
        receivedBytes: 600_000_000n,
        totalBytes: 2_400_000_000n,
        desiredVersion: 3,
      },
      update: {},
    });
    await prisma.modelState.upsert({
      where: key,
      create: { deviceId: device.id, modelName: 'phi-4-mini-q4_k_m', state: 'failed' },
      update: { state: 'failed', errorCode: 'CHECKSUM_MISMATCH', errorMessage: 'sha256 differs', progress: null },
    });
    const state = await prisma.modelState.findUniqueOrThrow({ where: key });
    expect(state).toMatchObject({
      state: 'failed',
      errorCode: 'CHECKSUM_MISMATCH',
      progress: null,
      totalBytes: 2_400_000_000n,
      loaded: false,
      desiredVersion: 3,
    });
    expect(await prisma.modelState.count({ where: { state: { in: ['ready', 'loading'] } } })).toBe(0);
    await prisma.modelState.delete({ where: key });
    await prisma.device.delete({ where: { id: device.id } });
  });

  it('traffic and telemetry: request records, rollups with histograms, retention deletes', async () => {
    const device = await prisma.device.create({ data: { name: 'factory-gw' } });
    const now = new Date('2026-11-24T12:00:00.000Z');
    await prisma.inferenceRequest.createMany({
      data: [
        {
          requestId: 'req-1',
          requestedModel: 'auto',
          model: 'qwen2.5-0.5b',
          tier: 'small',
          deviceId: device.id,
          latencyMs: 85,
          ttftMs: 20,
          tokensIn: 42,
          tokensOut: 17,
          outcome: 'success',
          apiKeyId: 'key-1',
          createdAt: now,
        },
        { requestId: 'req-2', requestedModel: 'large', outcome: 'timeout', retries: 2, errorCode: 'TIMEOUT', createdAt: now },
      ],
    });
    await expect(
      prisma.inferenceRequest.create({ data: { requestId: 'req-1', requestedModel: 'x', outcome: 'failed' } }),
    ).rejects.toEqual(knownError('P2002'));
    const timeouts = await prisma.inferenceRequest.findMany({ where: { outcome: 'timeout' } });
    expect(timeouts).toMatchObject([{ requestId: 'req-2', model: null, deviceId: null, tokensIn: 0, retries: 2, cloud: false }]);
    const byModel = await prisma.inferenceRequest.groupBy({
      by: ['model'],
      where: { createdAt: { gte: now } },
      _count: { _all: true },
      _avg: { latencyMs: true },
      orderBy: { model: 'asc' },
    });
    expect(byModel).toEqual([
      { model: 'qwen2.5-0.5b', _count: { _all: 1 }, _avg: { latencyMs: 85 } },
      { model: null, _count: { _all: 1 }, _avg: { latencyMs: null } },
    ]);

    const rollupKey = { bucketSeconds: 60, bucketStart: now, model: 'qwen2.5-0.5b', deviceId: device.id };
    const upsertRollup = (latency: number) =>
      prisma.requestRollup.upsert({
        where: { bucketSeconds_bucketStart_model_deviceId: rollupKey },
        create: {
          ...rollupKey,
          requests: 1,
          successes: 1,
          tokensOut: 17n,
          latencySumMs: BigInt(latency),
          latencyMaxMs: latency,
          latencyHistogram: { '100': 1 },
          expiresAt: new Date(now.getTime() + 86_400_000),
        },
        update: {
          requests: { increment: 1 },
          successes: { increment: 1 },
          tokensOut: { increment: 17n },
          latencySumMs: { increment: BigInt(latency) },
          latencyMaxMs: latency,
          latencyHistogram: { '100': 1, '250': 1 },
        },
      });
    await upsertRollup(85);
    const rollup = await upsertRollup(140);
    expect(rollup).toMatchObject({ requests: 2, successes: 2, tokensOut: 34n, latencySumMs: 225n, latencyHistogram: { '100': 1, '250': 1 } });
    await prisma.requestRollup.create({
      data: { bucketSeconds: 3600, bucketStart: now, model: 'large', expiresAt: new Date(now.getTime() - 1), timeouts: 1 },
    });
    expect((await prisma.requestRollup.findFirstOrThrow({ where: { model: 'large' } })).deviceId).toBe('');

    await prisma.telemetryRollup.create({
      data: {
        deviceId: device.id,
        bucketStart: now,
        bucketSeconds: 60,
        samples: 12,
        cpuAvg: 41.5,
        cpuMax: 97.25,
        memoryAvgBytes: 3.5 * 1024 ** 3,
        memoryMaxBytes: 4 * 1024 ** 3,
        tokensPerSecondAvg: 120.5,
        queueMax: 3,
        expiresAt: new Date(now.getTime() - 1),
      },
    });
    await expect(
      prisma.telemetryRollup.create({ data: { deviceId: device.id, bucketStart: now, bucketSeconds: 60, expiresAt: now } }),
    ).rejects.toEqual(knownError('P2002'));
    const chart = await prisma.telemetryRollup.findMany({
      where: { deviceId: device.id, bucketSeconds: 60, bucketStart: { gte: now } },
      orderBy: { bucketStart: 'asc' },
    });
    expect(chart).toMatchObject([{ samples: 12, cpuMax: 97.25, vramMaxBytes: 0, memoryMaxBytes: 4 * 1024 ** 3 }]);

    // Retention: expired rows go in one statement per table.
    const cutoff = new Date(now.getTime());
    expect((await prisma.telemetryRollup.deleteMany({ where: { expiresAt: { lt: cutoff } } })).count).toBe(1);
    expect((await prisma.requestRollup.deleteMany({ where: { expiresAt: { lt: cutoff } } })).count).toBe(1);
    await prisma.requestRollup.deleteMany();
    await prisma.inferenceRequest.deleteMany();
    await prisma.device.delete({ where: { id: device.id } });
  });

  it('alerts and audit events: open/resolve, JSON details, ordering', async () => {
    const alert = await prisma.alert.create({
      data: { rule: 'latency-high', severity: 'warning', subject: 'model:qwen', value: 3400, threshold: 3000 },
    });
    expect(alert).toMatchObject({ state: 'open', resolvedAt: null, message: null });
    const open = await prisma.alert.findFirst({ where: { rule: 'latency-high', subject: 'model:qwen', state: 'open' } });
    expect(open?.id).toBe(alert.id);
    const resolved = await prisma.alert.update({ where: { id: alert.id }, data: { state: 'resolved', resolvedAt: new Date() } });
    expect(resolved.state).toBe('resolved');
    expect(await prisma.alert.count({ where: { state: 'open' } })).toBe(0);

    await prisma.auditEvent.create({ data: { actor: 'system', action: 'fleet.apply', details: { models: 2, dryRun: false } } });
    await prisma.auditEvent.create({
      data: { actor: 'user:1', action: 'device.revoke', target: 'device:abc', at: new Date(Date.now() + 1000) },
    });
    const events = await prisma.auditEvent.findMany({ orderBy: { at: 'desc' } });
    expect(events.map((e) => e.action)).toEqual(['device.revoke', 'fleet.apply']);
    expect(events[0]?.details).toEqual({});
    expect(events[1]?.details).toEqual({ models: 2, dryRun: false });
    expect(await prisma.auditEvent.count({ where: { target: 'device:abc' } })).toBe(1);
    await prisma.auditEvent.deleteMany();
    await prisma.alert.delete({ where: { id: alert.id } });
  });

  it('rejects values outside an enum and rolls back a failed interactive transaction', async () => {
    await expect(
      prisma.$executeRaw`INSERT INTO "alerts" ("id", "rule", "severity", "subject") VALUES ('a1', 'r', 'fatal', 's')`,
    ).rejects.toThrow(/invalid input value for enum alert_severity/);
    await expect(
      prisma.$transaction(async (tx) => {
        await tx.user.create({ data: { email: 'rollback@example.com', passwordHash: 'x' } });
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect(await prisma.user.findUnique({ where: { email: 'rollback@example.com' } })).toBeNull();
    expect(Prisma.ModelName.AuditEvent).toBe('AuditEvent');
  });
});
