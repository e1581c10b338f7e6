import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceDetailSchema } from '@flotilla/protocol';
import { catalogEntry, ensureModel } from '@flotilla/tools/models';
import { startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';


// Issue 4's end-to-end bar with real agents (child processes of the built agent) on a generated model:
// enroll -> online -> deployment placed -> ready -> device killed -> offline within the bound -> re-placed -> ready.
const KEEPALIVE_S = 2;

describeBackends('fleet failover with real agents', (backend) => {
  let t: TestControlPlane;
  let agents: SimAgent[] = [];
  let base: string;
  let token: string;

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    ({ adminToken: token } = await adminLogin(t.cp, t.isolated.dataDir));
    base = await mkdtemp(join(tmpdir(), 'flotilla-e2e-'));
    agents = await startAgents({
      controlPlaneUrl: t.cp.url,
      adminToken: token,
      count: 2,
      baseDir: base,
      env: { FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: String(KEEPALIVE_S) },
    });
  });
  afterAll(async () => {
    await stopAgents(agents);
    await t?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  });

  // Parsed with the contract: real agents' hello and telemetry must fit the documented device detail.
  const detail = async (id: string) => DeviceDetailSchema.parse((await api(t.cp, `/api/v1/devices/${id}`, { token })).body);
  const readyOn = async (id: string) => (await detail(id)).modelStates.some((m) => m.model === 'e2e-tiny' && m.state === 'ready');

  it('places a deployment, and re-places it on the surviving device when its device dies', { timeout: 120_000 }, async () => {
    for (const agent of agents) {
      await pollUntil(async () => (await detail(agent.deviceId)).status === 'online', { timeoutMs: 20_000, what: `${agent.name} online` });
    }
    const model = await ensureModel('tiny');
    const created = await api(t.cp, '/api/v1/models', { token, body: catalogEntry(model, { name: 'e2e-tiny', memoryBytes: 64 * 1024 * 1024 }) });
    expect(created.status).toBe(201);
    expect((await api(t.cp, '/api/v1/deployments', { token, body: { name: 'e2e', model: 'e2e-tiny', replicas: 1, contextSize: 1024 } })).status).toBe(201);

    const first = await pollUntil(
      async () => {
        for (const agent of agents) if (await readyOn(agent.deviceId)) return agent;
        return undefined;
      },
      { timeoutMs: 30_000, what: 'the replica ready on a device' },
    );
    const survivor = agents.find((a) => a !== first);
    if (!survivor) throw new Error('no second agent');
    expect(await readyOn(survivor.deviceId)).toBe(false);

    const killedAt = Date.now();
    await first.kill();
    await pollUntil(async () => (await detail(first.deviceId)).status === 'offline', { timeoutMs: 15_000, intervalMs: 100, what: 'offline' });
    const offlineAfterMs = Date.now() - killedAt;
    expect(offlineAfterMs).toBeLessThanOrEqual(1.5 * KEEPALIVE_S * 1000 + 2000);

    await pollUntil(() => readyOn(survivor.deviceId), { timeoutMs: 30_000, what: 'the replica ready on the surviving device' });
    const replacedAfterMs = Date.now() - killedAt;
    console.log(`[${backend}] offline after ${offlineAfterMs} ms, re-placed and ready after ${replacedAfterMs} ms`);
    const placements = await api<{ items: { deviceId: string }[] } | { deviceId: string }[]>(t.cp, '/api/v1/placements', { token });
    const items = Array.isArray(placements.body) ? placements.body : placements.body.items;
    expect(items.map((p) => p.deviceId)).toEqual([survivor.deviceId]);
  });
});
