import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { topics } from '@flotilla/protocol';
import { ensureModel } from '@flotilla/tools/models';
import { freePort, startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import OpenAI from 'openai';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../src/app/create-app.js';
import { adminLogin, api, testConfig } from '../support/control-plane.js';
import { createIsolatedDatabase, describeBackends, type IsolatedDatabase } from '../support/databases.js';
import { parsePrometheusText, sampleValue } from '../observability/prometheus-text.js';
import { pollUntil } from '../support/poll.js';
import { addCatalogModel, publishDesired } from '../gateway/support.js';

// Issue 8, point 4: after a control-plane restart the database still says "online" for a device that died while no
// control plane was watching. The gateway must route only to devices that said hello to this process: a request made
// in the first seconds waits for the live agent and never goes to the dead one, and the REST views say the dead device is
// reconnecting (not online) and do not count its replica as ready; after the reconnect grace it is offline. Real
// agents, real restart on the same data and ports (the agents reconnect to the same mqtt:// URL).
describeBackends('routing after a control-plane restart with a dead agent', (backend) => {
  let isolated: IsolatedDatabase;
  let cp: ControlPlane | undefined;
  let agents: SimAgent[] = [];
  let base: string;
  let env: Record<string, string>;
  const logger = pino({ level: process.env.FLOTILLA_TEST_LOG_LEVEL ?? 'silent' });

  beforeAll(async () => {
    isolated = await createIsolatedDatabase(backend);
    const [httpPort, mqttPort] = [await freePort(), await freePort()];
    env = {
      FLOTILLA_HTTP_PORT: String(httpPort),
      FLOTILLA_MQTT_PORT: String(mqttPort),
      FLOTILLA_GATEWAY_QUEUE_WAIT_MS: '25000',
      FLOTILLA_GATEWAY_TIMEOUT_MS: '40000',
      // long enough for the live agent to be back first, short enough to see the dead one expire
      FLOTILLA_DEVICE_RECONNECT_GRACE_S: '15',
    };
    cp = await startControlPlane(testConfig(isolated, env), logger);
    base = await mkdtemp(join(tmpdir(), 'flotilla-restart-'));
  });
  afterAll(async () => {
    await stopAgents(agents);
    await cp?.close();
    await isolated?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('sends nothing to the dead device, serves early requests once the live agent is back, and REST says reconnecting, then offline', { timeout: 180_000 }, async () => {
    if (!cp) throw new Error('no control plane');
    const { adminToken, gatewayKey } = await adminLogin(cp, isolated.dataDir);
    agents = await startAgents({
      controlPlaneUrl: cp.url,
      adminToken,
      count: 2,
      baseDir: base,
      // one URL: the agents retry the same broker and never fall back to ws:// (another part of issue 8)
      env: { FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: '2', FLOTILLA_AGENT_MQTT_URL: `mqtt://127.0.0.1:${env.FLOTILLA_MQTT_PORT}` },
    });
    const [dead, live] = agents as [SimAgent, SimAgent];
    const model = await ensureModel('tiny', { seed: 21 });
    await addCatalogModel(cp, 'restart-tiny', 'small', model);
    for (const a of agents) await publishDesired(cp, a.deviceId, [{ name: 'restart-tiny', file: model }]);
    const replicas = async (c: ControlPlane) =>
      (await api<{ replicas: Record<string, string[]> }>(c, '/api/v1/gateway/stats', { token: adminToken })).body.replicas['restart-tiny'] ?? [];
    await pollUntil(async () => (await replicas(cp as ControlPlane)).length === 2, { timeoutMs: 60_000, intervalMs: 200, what: 'both replicas ready' });
    // A deployment over both devices: the scheduler places the model on both and counts what they report ready.
    const created = await api(cp, '/api/v1/deployments', { token: adminToken, body: { name: 'restart', model: 'restart-tiny', replicas: 2, parallel: 4 } });
    expect(created.status).toBe(201);
    const deployment = async (c: ControlPlane, token: string) =>
      (await api<{ status: { placed: number; ready: number; deviceIds: string[] } | null }>(c, '/api/v1/deployments/restart', { token })).body.status;
    await pollUntil(async () => (await deployment(cp as ControlPlane, adminToken))?.ready === 2, { timeoutMs: 30_000, what: 'the deployment 2/2 ready' });
    const ask = { model: 'auto', messages: [{ role: 'user' as const, content: 'Hi!' }], max_tokens: 8, temperature: 0, seed: 1 };
    await new OpenAI({ baseURL: `${cp.url}/v1`, apiKey: gatewayKey, maxRetries: 0 }).chat.completions.create(ask);

    // The control plane goes away; while none is watching, one agent dies. The database still says both are online.
    await cp.close();
    cp = undefined;
    await dead.kill();
    cp = await startControlPlane(testConfig(isolated, env), logger);
    const restarted = cp;
    const upAt = Date.now();
    const jobsToDead: string[] = [];
    await restarted.broker.subscribe(topics.inferenceRequest(dead.deviceId), (m) => jobsToDead.push(m.topic));
    const { adminToken: token } = await adminLogin(restarted, isolated.dataDir);
    // the precondition this test is about: a dead device stored as online
    expect((await restarted.database.prisma.device.findUniqueOrThrow({ where: { id: dead.deviceId } })).status).toBe('online');
    const device = async (id: string) => (await api<{ status: string; connected: boolean }>(restarted, `/api/v1/devices/${id}`, { token })).body;
    const listed = async (query = '') =>
      (await api<{ items: { id: string; status: string }[] }>(restarted, `/api/v1/devices${query}`, { token })).body.items;
    // REST right after the restart: the dead device is reconnecting, not online
    expect(await device(dead.deviceId)).toMatchObject({ status: 'reconnecting', connected: false });
    expect((await listed()).find((d) => d.id === dead.deviceId)?.status).toBe('reconnecting');
    expect((await listed('?status=online')).map((d) => d.id)).not.toContain(dead.deviceId);
    expect((await listed('?status=reconnecting')).map((d) => d.id)).toContain(dead.deviceId);

    const client = new OpenAI({ baseURL: `${restarted.url}/v1`, apiKey: gatewayKey, maxRetries: 0 });
    const send = async (i: number) => {
      const started = Date.now();
      const { data, response } = await client.chat.completions.create({ ...ask, messages: [{ role: 'user', content: `Hi ${i}!` }] }).withResponse();
      return { device: response.headers.get('x-flotilla-device'), ms: Date.now() - started, content: data.choices[0]?.message.content };
    };
    // Right after the restart, before the live agent reconnected: they wait for it instead of going to the dead one.
    const early = await Promise.all([0, 1, 2, 3].map(send));
    await pollUntil(async () => (await replicas(restarted)).includes(live.deviceId), { timeoutMs: 30_000, what: 'the live agent back' });
    const backAfterMs = Date.now() - upAt;
    // The deployment keeps its replica on the reconnecting device but counts only the live one ready; read the device
    // after the deployment, so it was still reconnecting when the deployment was read.
    await pollUntil(async () => (await deployment(restarted, token))?.ready === 1, { timeoutMs: 15_000, what: 'the live replica counted ready' });
    const during = await deployment(restarted, token);
    const placements = await api<{ items: { deviceId: string; deviceStatus: string; ready: boolean }[] }>(restarted, '/api/v1/placements', { token });
    const health = await api<{ devices: { online: number; reconnecting: number } }>(restarted, '/api/v1/fleet-health', { token });
    const metrics = parsePrometheusText(await (await fetch(`${restarted.url}/metrics`)).text());
    expect(await device(dead.deviceId)).toMatchObject({ status: 'reconnecting' });
    expect(during).toMatchObject({ placed: 2, ready: 1 });
    expect(placements.body.items.find((p) => p.deviceId === dead.deviceId)).toMatchObject({ deviceStatus: 'reconnecting', ready: false });
    expect(placements.body.items.find((p) => p.deviceId === live.deviceId)).toMatchObject({ deviceStatus: 'online', ready: true });
    expect(health.body.devices).toMatchObject({ online: 1, reconnecting: 1 });
    expect(['online', 'reconnecting'].map((status) => sampleValue(metrics, 'flotilla_devices', { status }))).toEqual([1, 1]);
    expect(await device(live.deviceId)).toMatchObject({ status: 'online', connected: true });

    const later = await Promise.all([4, 5, 6, 7].map(send));
    console.log(`[${backend}] early requests took ${early.map((r) => r.ms).join(', ')} ms; live agent listed ready ${backAfterMs} ms after the restart`);

    for (const r of [...early, ...later]) {
      expect(r.device).toBe(live.deviceId);
      expect(typeof r.content).toBe('string');
      // no first-token timeout on a dead device (10 s) on the way; the live agent reconnects within a few seconds
      expect(r.ms).toBeLessThan(9_000);
    }
    expect(jobsToDead).toEqual([]);
    // REST: the dead device is no ready replica while it has not said hello to this process
    expect(await replicas(restarted)).toEqual([live.deviceId]);
    // After the reconnect grace the dead device is offline. No other device can take its replica (the live one holds
    // one already), so the replica stays placed there (a box that comes back keeps its model) but is no ready replica
    // and gets no request.
    await pollUntil(async () => (await device(dead.deviceId)).status === 'offline', { timeoutMs: 40_000, intervalMs: 250, what: 'the dead device offline' });
    await pollUntil(async () => (await deployment(restarted, token))?.ready === 1, { timeoutMs: 15_000, what: 'one ready replica' });
    expect(await deployment(restarted, token)).toMatchObject({ ready: 1, placed: 2 });
    expect(await replicas(restarted)).toEqual([live.deviceId]);
    expect((await listed('?status=reconnecting')).map((d) => d.id)).toEqual([]);
  });
});
