import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceDetailSchema } from '@flotilla/protocol';
import { catalogEntry, ensureModel } from '@flotilla/tools/models';
import { freePort, startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../src/app/create-app.js';
import { adminLogin, api, testConfig } from '../support/control-plane.js';
import { createIsolatedDatabase, describeBackends, type IsolatedDatabase } from '../support/databases.js';
import { agentAckedSeq, compareStored, producedEntries } from '../support/outbox.js';
import { pollUntil } from '../support/poll.js';

// Issue 11, CI scenario "control-plane restart": 3 real agents with a ready deployment, telemetry every 250 ms and
// inference on their local endpoints (usage entries), see the control plane stop and start again on the same data and
// ports. Every device is back online, the desired states are published again (a new version, reported back by every
// agent with its model ready), and every outbox entry an agent saw acknowledged before the restart — and after it — is
// stored exactly once. (outbox-crash.spec.ts covers the SIGKILL between PUBACK and commit; this is the planned restart.)
const MODEL = 'restart-rec-tiny';

describeBackends('control-plane restart with real agents (issue 11)', (backend) => {
  let isolated: IsolatedDatabase;
  let cp: ControlPlane | undefined;
  let agents: SimAgent[] = [];
  let base: string;
  let env: Record<string, string>;
  const logger = pino({ level: process.env.FLOTILLA_TEST_LOG_LEVEL ?? 'silent' });

  beforeAll(async () => {
    isolated = await createIsolatedDatabase(backend);
    env = { FLOTILLA_HTTP_PORT: String(await freePort()), FLOTILLA_MQTT_PORT: String(await freePort()), FLOTILLA_INGEST_FLUSH_MS: '200' };
    cp = await startControlPlane(testConfig(isolated, env), logger);
    base = await mkdtemp(join(tmpdir(), 'flotilla-restart-rec-'));
  });
  afterAll(async () => {
    await stopAgents(agents);
    await cp?.close();
    await isolated?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('brings every device back with its desired state re-published and stores every acknowledged entry once', { timeout: 180_000 }, async () => {
    if (!cp) throw new Error('no control plane');
    const started = Date.now();
    const { adminToken } = await adminLogin(cp, isolated.dataDir);
    const modelFile = ensureModel('tiny', { seed: 41 }); // in parallel with the agents' start
    agents = await startAgents({
      controlPlaneUrl: cp.url,
      adminToken,
      count: 3,
      baseDir: base,
      namePrefix: 'rec',
      env: { FLOTILLA_AGENT_TELEMETRY_INTERVAL_SECONDS: '0.25', FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: '2' },
    });
    const model = await modelFile;
    expect((await api(cp, '/api/v1/models', { token: adminToken, body: catalogEntry(model, { name: MODEL, memoryBytes: 64 * 1024 * 1024 }) })).status).toBe(201);
    expect((await api(cp, '/api/v1/deployments', { token: adminToken, body: { name: 'rec', model: MODEL, replicas: 3, contextSize: 1024 } })).status).toBe(201);
    const deploymentReady = async (c: ControlPlane, token: string) =>
      (await api<{ status: { ready: number } | null }>(c, '/api/v1/deployments/rec', { token })).body.status?.ready === 3;
    await pollUntil(() => deploymentReady(cp as ControlPlane, adminToken), { timeoutMs: 90_000, intervalMs: 250, what: 'the deployment 3/3 ready' });

    // usage entries: local inference on every agent, before, during and after the restart
    let load = true;
    let served = 0;
    const loops = agents.map(async (agent) => {
      while (load) {
        const res = await fetch(`${agent.localApiUrl}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
          signal: AbortSignal.timeout(10_000),
        }).catch(() => undefined);
        if (res?.status === 200) served += 1;
        await res?.text().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 200));
      }
    });
    let restartMs = 0;
    const before = new Map<string, { desiredVersion: number; acked: number }>();
    try {
      await pollUntil(() => served >= 6, { timeoutMs: 60_000, intervalMs: 200, what: 'local inference on the agents' });
      const detail = async (c: ControlPlane, token: string, id: string) => DeviceDetailSchema.parse((await api(c, `/api/v1/devices/${id}`, { token })).body);
      // every agent has had entries acknowledged before the restart
      for (const agent of agents) await pollUntil(async () => (await agentAckedSeq(agent)) > 5, { timeoutMs: 20_000, what: `${agent.name} acked entries` });

      const versions = new Map<string, number>();
      for (const agent of agents) versions.set(agent.deviceId, (await detail(cp, adminToken, agent.deviceId)).desiredVersion);
      await cp.close();
      cp = undefined;
      for (const agent of agents) before.set(agent.deviceId, { desiredVersion: versions.get(agent.deviceId) ?? 0, acked: await agentAckedSeq(agent) });
      await new Promise((r) => setTimeout(r, 1000)); // the agents keep producing while it is down
      const restartAt = Date.now();
      cp = await startControlPlane(testConfig(isolated, env), logger);
      const restarted = cp;
      const { adminToken: token } = await adminLogin(restarted, isolated.dataDir);
      for (const agent of agents) {
        await pollUntil(
          async () => {
            const d = await detail(restarted, token, agent.deviceId);
            const was = before.get(agent.deviceId)?.desiredVersion ?? 0;
            // back online on this process, the desired state re-published (new version) and reported back, model ready
            return (
              d.status === 'online' &&
              d.connected &&
              d.desiredVersion > was &&
              d.reportedDesiredVersion === d.desiredVersion &&
              d.modelStates.some((m) => m.model === MODEL && m.state === 'ready')
            );
          },
          { timeoutMs: 60_000, intervalMs: 200, what: `${agent.name} back online with its desired state re-published and ready` },
        );
      }
      restartMs = Date.now() - restartAt;
      await pollUntil(() => deploymentReady(restarted, token), { timeoutMs: 30_000, intervalMs: 250, what: 'the deployment 3/3 ready again' });
      // entries produced while it was down and after are acknowledged too
      for (const agent of agents) {
        const last = Math.max(0, ...(await producedEntries(agent)).map((e) => e.seq));
        await pollUntil(async () => (await agentAckedSeq(agent)) >= last, { timeoutMs: 30_000, intervalMs: 200, what: `${agent.name} acked up to seq ${last}` });
      }
    } finally {
      load = false;
      await Promise.all(loops);
    }
    await stopAgents(agents);
    await new Promise((r) => setTimeout(r, 1000)); // the last flush
    await cp.close();
    cp = undefined;

    for (const { deviceId, cursor, produced, got, want } of await compareStored(isolated.options, agents)) {
      const agent = agents.find((a) => a.deviceId === deviceId) as SimAgent;
      console.log(
        `[${backend}] ${agent.name}: ${produced} produced, acked ${before.get(deviceId)?.acked} before the restart, cursor ${cursor}; ` +
          `stored telemetry ${got.telemetry}/${want.telemetry}, events ${got.events.length}/${want.events.length}, usage ${got.usage.length}/${want.usage.length}`,
      );
      expect(got).toEqual(want);
      // what the agent saw acknowledged is at or below what is stored
      expect(cursor).toBeGreaterThanOrEqual(await agentAckedSeq(agent));
      expect(cursor).toBeGreaterThan(before.get(deviceId)?.acked ?? 0);
      expect(want.usage.length).toBeGreaterThan(0);
    }
    console.log(`[${backend}] every device back ${restartMs} ms after the restart; scenario ${Date.now() - started} ms, ${served} local requests`);
  });
});

