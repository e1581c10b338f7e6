import { afterAll, beforeAll, expect, it } from 'vitest';
import { DeploymentSchema, ModelSchema, PlacementPageSchema, SchedulerStatusSchema } from '@flotilla/protocol';
import { apiOk } from '../support/contract.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { FakeDevice, GiB, adminToken, modelBody } from './support.js';

describeBackends('placement with a real control plane and MQTT devices', (backend) => {
  let t: TestControlPlane;
  let token: string;
  const devices: FakeDevice[] = [];
  const chat = modelBody('chat-small');
  const chatNext = modelBody('chat-small-v2', { memoryBytes: '300MiB' });

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    token = await adminToken(t.cp, t.isolated.dataDir);
    for (const name of ['kiosk-a', 'kiosk-b']) {
      const device = await FakeDevice.enroll(t.cp, token, name, { zone: 'shop' });
      await device.start(t.cp, { memory: { totalBytes: 4 * GiB, freeBytes: 3 * GiB } });
      devices.push(device);
    }
    // The registry marks them online from hello + status.
    await pollUntil(async () => {
      const rows = await t.cp.database.prisma.device.findMany({ where: { status: 'online' } });
      return rows.length === 2;
    }, { what: 'both devices online' });
  });
  afterAll(async () => {
    for (const d of devices) await d.stop();
    await t?.dispose();
  });

  const holder = () => devices.find((d) => d.models.includes('chat-small'));
  const get = (path: string) => apiOk(DeploymentSchema, t.cp, path, { token });

  it('places a deployment and publishes a versioned, retained desired state to the chosen device', async () => {
    expect((await apiOk(ModelSchema, t.cp, '/api/v1/models', { token, body: chat })).status).toBe(201);
    const created = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments', {
      token,
      body: { name: 'chat', model: 'chat-small', replicas: 1, labelSelector: { zone: 'shop' } },
    });
    expect(created.status).toBe(201);
    const device = await pollUntil(holder, { what: 'a desired state with chat-small' });
    const desired = device.latest;
    expect(desired?.version).toBeGreaterThanOrEqual(1);
    expect(desired?.models).toEqual([
      { name: 'chat-small', url: chat.sourceUrl, sha256: chat.sha256, sizeBytes: chat.sizeBytes, pinned: false, loaded: true, contextSize: 2048, parallel: 1 },
    ]);
    expect(desired?.limits).toEqual({ maxParallelRequests: 10, maxQueueLength: 1000 });
    const row = await t.cp.database.prisma.device.findUniqueOrThrow({ where: { id: device.deviceId } });
    expect(row.desiredVersion).toBe(desired?.version);
    // A reconnecting agent gets the same state from the broker.
    expect((await device.retained())?.version).toBe(desired?.version);
    const status = await pollUntil(async () => (await get('/api/v1/deployments/chat')).body.status ?? undefined, { what: 'deployment status' });
    expect(status).toMatchObject({ placed: 1, ready: 0, deviceIds: [device.deviceId] });
    const placements = await apiOk(PlacementPageSchema, t.cp, '/api/v1/placements', { token });
    expect(placements.body.items).toEqual([expect.objectContaining({ deviceId: device.deviceId, model: 'chat-small', deployment: 'chat', desiredVersion: desired?.version, ready: false })]);
  });

  it('counts a replica ready once the device reports it, and exposes it', async () => {
    const device = holder();
    if (!device) throw new Error('no holder');
    await device.reportReady([{ name: chat.name, sha256: chat.sha256 }]);
    const placements = await pollUntil(async () => {
      const r = await apiOk(PlacementPageSchema, t.cp, '/api/v1/placements', { token });
      return r.body.items.every((p) => p.ready) ? r.body : undefined;
    }, { what: 'placement ready' });
    expect(placements.items[0]?.state).toBe('ready');
  });

  it('rolls out a new model without losing capacity: the old replica stays until the new one is ready', async () => {
    const device = holder();
    if (!device) throw new Error('no holder');
    expect((await apiOk(ModelSchema, t.cp, '/api/v1/models', { token, body: chatNext })).status).toBe(201);
    const rolled = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/chat/rollout', { token, body: { model: 'chat-small-v2' } });
    expect(rolled.status).toBe(200);
    expect(rolled.body.model).toBe('chat-small-v2');
    // Both are desired while the new one is on its way (on whichever device the planner picked).
    const newHolder = await pollUntil(() => devices.find((d) => d.models.includes('chat-small-v2')), { what: 'the new model placed' });
    expect(device.models).toContain('chat-small');
    const during = await pollUntil(async () => (await get('/api/v1/deployments/chat')).body.status?.rollingOut || undefined, { what: 'rolling out' });
    expect(during).toBe(true);
    await newHolder.reportReady([
      { name: chatNext.name, sha256: chatNext.sha256 },
      ...(newHolder === device ? [{ name: chat.name, sha256: chat.sha256 }] : []),
    ]);
    await pollUntil(() => !device.models.includes('chat-small'), { what: 'the old model removed' });
    expect(newHolder.models).toEqual(['chat-small-v2']);
    const after = await get('/api/v1/deployments/chat');
    expect(after.body.status).toMatchObject({ placed: 1, ready: 1, previous: 0, rollingOut: false });
  });

  it('re-places the replica on the other device within 10 s when its device dies', async () => {
    const victim = devices.find((d) => d.models.includes('chat-small-v2'));
    const survivor = devices.find((d) => d !== victim);
    if (!victim || !survivor) throw new Error('no holder');
    const started = Date.now();
    victim.kill();
    await pollUntil(() => survivor.models.includes('chat-small-v2'), { timeoutMs: 10_000, intervalMs: 50, what: 're-placement on the survivor' });
    expect(Date.now() - started).toBeLessThan(10_000);
    const placements = await apiOk(PlacementPageSchema, t.cp, '/api/v1/placements', { token });
    expect(placements.body.items.map((p) => p.deviceId)).toEqual([survivor.deviceId]);
    // The dead device's retained desired state no longer lists the model either.
    const row = await t.cp.database.prisma.device.findUniqueOrThrow({ where: { id: victim.deviceId } });
    expect(row.status).toBe('offline');
    const left = await t.cp.database.prisma.placement.count({ where: { deviceId: victim.deviceId } });
    expect(left).toBe(0);
  });

  it('reports replicas it cannot place, and places them when a device comes back', async () => {
    const scaled = await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/chat/scale', { token, body: { replicas: 2 } });
    expect(scaled.status).toBe(200);
    const status = await pollUntil(async () => (await get('/api/v1/deployments/chat')).body.status?.unsatisfied ?? undefined, { what: 'unsatisfied' });
    expect(status.message).toBe('1 of 2 replicas of chat-small-v2 cannot be placed: 1 device already hold a replica of this model, 1 device not online');
    // The scheduler's own view of the same run, and a run on demand, answer in the contract's shape.
    const last = await apiOk(SchedulerStatusSchema, t.cp, '/api/v1/scheduler', { token });
    expect(last.body.lastRun?.deployments).toEqual([expect.objectContaining({ name: 'chat', wanted: 2, unsatisfied: expect.objectContaining({ devices: { 'holds-model': 1, offline: 1 } }) })]);
    const run = await apiOk(SchedulerStatusSchema, t.cp, '/api/v1/scheduler/run', { token, method: 'POST' });
    expect(run.body.lastRun?.deployments.map((d) => d.name)).toEqual(['chat']);
    const victim = devices.find((d) => !d.client);
    if (!victim) throw new Error('no dead device');
    await victim.start(t.cp, { memory: { totalBytes: 4 * GiB, freeBytes: 3 * GiB } });
    await pollUntil(() => victim.models.includes('chat-small-v2'), { timeoutMs: 10_000, what: 'placement on the returning device' });
  });

  it('sends a new version when the catalog entry changes, and an empty state when the deployment goes', async () => {
    const before = devices.map((d) => d.latest?.version ?? 0);
    const patched = await apiOk(ModelSchema, t.cp, '/api/v1/models/chat-small-v2', { token, method: 'PATCH', body: { sourceUrl: 'https://mirror.example/chat-small-v2.gguf' } });
    expect(patched.status).toBe(200);
    for (const [i, d] of devices.entries()) {
      const state = await pollUntil(() => (d.latest && d.latest.version > (before[i] ?? 0) ? d.latest : undefined), { what: 'new version after the catalog change' });
      expect(state.models[0]?.url).toBe('https://mirror.example/chat-small-v2.gguf');
    }
    expect((await apiOk(DeploymentSchema, t.cp, '/api/v1/deployments/chat', { token, method: 'DELETE' })).status).toBe(200);
    for (const d of devices) await pollUntil(() => d.latest?.models.length === 0, { what: 'empty desired state' });
    expect(await t.cp.database.prisma.placement.count()).toBe(0);
  });

  it('publishes every desired state again, with a new version, after a control-plane restart', async () => {
    const device = devices[0];
    if (!device) throw new Error('no device');
    const version = device.latest?.version ?? 0;
    for (const d of devices) await d.stop();
    await t.restart();
    await device.start(t.cp, { memory: { totalBytes: 4 * GiB, freeBytes: 3 * GiB } });
    const retained = await pollUntil(() => device.desired.find((d) => d.retain && d.state.version > version), { what: 'retained desired state after restart' });
    expect(retained.state).toMatchObject({ version: version + 1, models: [] });
  });
});
