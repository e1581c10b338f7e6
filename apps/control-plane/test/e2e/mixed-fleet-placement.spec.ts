import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeploymentSchema, PlacementPageSchema } from '@flotilla/protocol';
import { catalogEntry, ensureModel } from '@flotilla/tools/models';
import { ControlPlaneProcess, startAgents, startSimFleet, stopAgents, summaryLine, type SimAgent, type SimFleet } from '@flotilla/tools/sim';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createIsolatedDatabase, describeBackend, type IsolatedDatabase } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { seedSimDevices } from '../support/sim-devices.js';

// Issue 11, CI scenario "3 real agents and 500 simulated devices; placement converges": the built control plane on
// its embedded database, 3 real agents (built bundle, generated model) and 500 simulated devices. One deployment
// selects the real agents, another the simulated devices; both converge to every replica placed and reported ready,
// and again after the simulated one is scaled down. The simulated devices are enrolled by writing them into the
// database before the control plane starts (see seedSimDevices); the real agents enroll over REST.
const SIMULATED = 500;
const MODEL = 'mixed-tiny';

describeBackend('pglite', '3 real agents and 500 simulated devices (issue 11)', (backend) => {
  let isolated: IsolatedDatabase;
  let cp: ControlPlaneProcess | undefined;
  let fleet: SimFleet | undefined;
  let agents: SimAgent[] = [];
  let base: string;

  beforeAll(async () => {
    isolated = await createIsolatedDatabase(backend);
    base = await mkdtemp(join(tmpdir(), 'flotilla-mixed-'));
    await seedSimDevices(isolated.options, join(base, 'credentials.json'), { count: SIMULATED, namePrefix: 'mixed-sim', labels: { kind: 'simulated' } });
    cp = await ControlPlaneProcess.start({ dataDir: isolated.dataDir, databaseUrl: isolated.databaseUrl, logLevel: 'warn' });
  });
  afterAll(async () => {
    await fleet?.stop({ graceful: false });
    await stopAgents(agents);
    await cp?.stop();
    await isolated?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('places a deployment on the real agents and one over the simulated devices; both converge, and again after a scale-down', { timeout: 300_000 }, async () => {
    if (!cp) throw new Error('no control plane');
    const c = cp;
    const started = Date.now();
    agents = await startAgents({ controlPlaneUrl: c.url, adminToken: c.adminToken, count: 3, baseDir: base, namePrefix: 'mixed' });
    const sim = await startSimFleet({
      controlPlaneUrl: c.url,
      mqttUrl: c.mqttUrl,
      credentialsFile: join(base, 'credentials.json'),
      devicesPerAddress: 20,
      connectRatePerSecond: 100,
      // placement is timed here, not connects: a CONNECT may wait up to 60 s for its CONNACK on a loaded box
      behaviour: { keepaliveSeconds: 5, telemetryIntervalMs: 5000, downloadMs: 1000, loadMs: 200, connectTimeoutMs: 60_000 },
    });
    fleet = sim;
    await sim.join(SIMULATED);
    // every device online (one whose CONNECT failed retries with the agent's jittered backoff: the no-failed-connect
    // floor is sim-fleet-floor.spec.ts; here placement is the subject)
    const online = await sim.waitFor((s) => s.online === SIMULATED, `${SIMULATED} simulated devices online`, 180_000);
    const onlineAt = Date.now();

    const model = await ensureModel('tiny', { seed: 61 });
    await c.api('/api/v1/models', { body: catalogEntry(model, { name: MODEL, memoryBytes: 64 * 1024 * 1024 }) });
    const createdAt = Date.now();
    await c.api('/api/v1/deployments', { body: { name: 'agents', model: MODEL, replicas: 3, labelSelector: { sim: 'true' }, contextSize: 1024 } });
    await c.api('/api/v1/deployments', { body: { name: 'fleet', model: MODEL, replicas: 300, labelSelector: { kind: 'simulated' }, contextSize: 1024 } });
    const status = async (name: string) => DeploymentSchema.parse(await c.api(`/api/v1/deployments/${name}`)).status;
    const converged = async (name: string, wanted: number) => {
      const s = await status(name);
      return s !== null && s.wanted === wanted && s.placed === wanted && s.ready === wanted && !s.unsatisfied;
    };
    // a probe that says where convergence stands when it times out
    const convergedOrSay = async (name: string, wanted: number) => {
      if (await converged(name, wanted)) return true;
      const s = await status(name);
      throw new Error(`${name}: wanted ${wanted}, ${JSON.stringify(s && { placed: s.placed, ready: s.ready, unsatisfied: s.unsatisfied })}`);
    };
    await pollUntil(async () => (await convergedOrSay('agents', 3)) && (await convergedOrSay('fleet', 300)), { timeoutMs: 120_000, intervalMs: 500, what: 'both deployments placed and ready' });
    const convergedMs = Date.now() - createdAt;
    const agentIds = new Set(agents.map((a) => a.deviceId));
    expect(new Set((await status('agents'))?.deviceIds)).toEqual(agentIds);
    const fleetDevices = (await status('fleet'))?.deviceIds ?? [];
    expect(fleetDevices.filter((id) => agentIds.has(id))).toEqual([]);
    // the simulated devices themselves hold 300 ready models
    await sim.waitFor((s) => (s.modelStates.ready ?? 0) === 300, '300 models ready on the simulated devices', 30_000);

    const scaledAt = Date.now();
    await c.api('/api/v1/deployments/fleet/scale', { body: { replicas: 120 } });
    await pollUntil(() => convergedOrSay('fleet', 120), { timeoutMs: 60_000, intervalMs: 500, what: 'the scaled-down deployment converged' });
    await sim.waitFor((s) => (s.modelStates.ready ?? 0) === 120, '120 models left on the simulated devices', 60_000);
    const scaledMs = Date.now() - scaledAt;
    const placements = PlacementPageSchema.parse(await c.api('/api/v1/placements?limit=500'));
    expect(placements.items.length).toBe(123);
    expect(await converged('agents', 3)).toBe(true);
    const final = sim.stats();
    console.log(
      `[${backend}] ${SIMULATED} simulated online ${onlineAt - started} ms after start (3 real agents; ${online.counters.failedConnects} failed connects on the way); 3 + 300 replicas converged ${convergedMs} ms after the creates; ` +
        `scale 300 -> 120 converged in ${scaledMs} ms; ${summaryLine(final)}; scenario ${Date.now() - started} ms`,
    );
    expect(final.online).toBe(SIMULATED);
  });
});
