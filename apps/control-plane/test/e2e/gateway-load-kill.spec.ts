import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceDetailSchema } from '@flotilla/protocol';
import { catalogEntry, ensureModel } from '@flotilla/tools/models';
import { startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parsePrometheusText } from '../observability/prometheus-text.js';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackend } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';

// Issue 11, CI scenario "gateway load while a real agent is SIGKILLed": the official `openai` client sends
// non-streamed chat completions from several workers at once through the gateway to 3 real agents serving one
// deployment; one agent is SIGKILLed in the middle of the load. Every request succeeds (retried or continued on a
// surviving replica), and the device is shown offline within the bound of fleet-failover.spec.ts.
const KEEPALIVE_S = 2;
const MODEL = 'load-tiny';
const WORKERS = 6;
const LOAD_MS = 8_000;
const KILL_AFTER_MS = 3_000;
/** agents hand out one token per this many ms (test seam): an answer takes ~0.5 s, so the kill lands mid-answer */
const TOKEN_GAP_MS = 15;

// One backend: the gateway's hot path makes no database round trip (its request rows are batched), so the second
// database would add ~30 s to the suite for nothing this scenario is about.
describeBackend('pglite', 'gateway load with the openai client while an agent is SIGKILLed (issue 11)', (backend) => {
  let t: TestControlPlane;
  let agents: SimAgent[] = [];
  let base: string;
  let token: string;
  let client: OpenAI;

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    let gatewayKey: string;
    ({ adminToken: token, gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir));
    client = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: gatewayKey, maxRetries: 0, timeout: 60_000 });
    base = await mkdtemp(join(tmpdir(), 'flotilla-load-kill-'));
    agents = await startAgents({
      controlPlaneUrl: t.cp.url,
      adminToken: token,
      count: 3,
      baseDir: base,
      namePrefix: 'load',
      env: {
        FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: String(KEEPALIVE_S),
        FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: '0',
        FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK: '4',
        FLOTILLA_AGENT_TEST_TOKEN_GAP_MS: String(TOKEN_GAP_MS),
      },
    });
  });
  afterAll(async () => {
    await stopAgents(agents);
    await t?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  });

  const detail = async (id: string) => DeviceDetailSchema.parse((await api(t.cp, `/api/v1/devices/${id}`, { token })).body);
  const replicas = async () => (await api<{ replicas: Record<string, string[]> }>(t.cp, '/api/v1/gateway/stats', { token })).body.replicas[MODEL] ?? [];

  it('answers every non-streamed request while one of three replicas dies, and shows it offline within the bound', { timeout: 180_000 }, async () => {
    const started = Date.now();
    const model = await ensureModel('tiny', { seed: 31 });
    expect((await api(t.cp, '/api/v1/models', { token, body: catalogEntry(model, { name: MODEL, memoryBytes: 64 * 1024 * 1024 }) })).status).toBe(201);
    expect((await api(t.cp, '/api/v1/deployments', { token, body: { name: 'load', model: MODEL, replicas: 3, contextSize: 1024, parallel: 4 } })).status).toBe(201);
    await pollUntil(
      async () => {
        if ((await replicas()).length === 3) return true;
        // says where it stands when it times out
        const states = await Promise.all(agents.map(async (a) => `${a.name} ${(await detail(a.deviceId)).status} ${JSON.stringify((await detail(a.deviceId)).modelStates.map((m) => m.state))}`));
        throw new Error(`ready replicas ${(await replicas()).length}/3; ${states.join('; ')}`);
      },
      { timeoutMs: 90_000, intervalMs: 250, what: 'three ready replicas' },
    );
    const readyAt = Date.now();

    const results: { ok: boolean; devices: string[]; error?: string; startedAt: number; endedAt: number }[] = [];
    const loadUntil = Date.now() + LOAD_MS;
    const worker = async (w: number) => {
      for (let i = 0; Date.now() < loadUntil; i++) {
        const startedAt = Date.now();
        try {
          const { data, response } = await client.chat.completions
            .create({ model: MODEL, messages: [{ role: 'user', content: `worker ${w} request ${i}` }], max_tokens: 32, temperature: 0, seed: w })
            .withResponse();
          const ok = typeof data.choices[0]?.message.content === 'string';
          results.push({ ok, devices: (response.headers.get('x-flotilla-device') ?? '').split(','), startedAt, endedAt: Date.now() });
        } catch (error) {
          results.push({ ok: false, devices: [], error: error instanceof Error ? error.message : String(error), startedAt, endedAt: Date.now() });
        }
      }
    };
    const load = Promise.all(Array.from({ length: WORKERS }, (_, w) => worker(w)));

    await new Promise((r) => setTimeout(r, KILL_AFTER_MS));
    const victim = agents[0] as SimAgent;
    const killedAt = Date.now();
    await victim.kill();
    await pollUntil(async () => (await detail(victim.deviceId)).status === 'offline', { timeoutMs: 15_000, intervalMs: 100, what: `${victim.name} offline` });
    const offlineAfterMs = Date.now() - killedAt;
    await load;

    const failed = results.filter((r) => !r.ok);
    // answers begun on the victim and finished by a survivor (x-flotilla-device lists both, in order)
    const continued = results.filter((r) => r.devices.length > 1 && r.devices[0] === victim.deviceId);
    const afterKill = results.filter((r) => r.endedAt > killedAt);
    const metrics = parsePrometheusText(await (await fetch(`${t.cp.url}/metrics`)).text());
    const retries = (metrics.get('flotilla_gateway_retries_total')?.samples ?? []).reduce((sum, s) => sum + s.value, 0);
    console.log(
      `[${backend}] ${results.length} requests (${afterKill.length} ended after the kill), ${failed.length} failed, ${retries} failovers (${continued.length} continued mid-answer); ` +
        `victim offline after ${offlineAfterMs} ms; ready ${readyAt - started} ms, scenario ${Date.now() - started} ms`,
    );
    expect(failed).toEqual([]);
    // the kill hit the load: requests in flight on the victim were moved to a surviving replica
    expect(retries).toBeGreaterThan(0);
    // load went on after the kill; what started once the victim was shown offline went to the survivors only
    expect(afterKill.length).toBeGreaterThan(WORKERS);
    expect(results.filter((r) => r.startedAt > killedAt + offlineAfterMs).flatMap((r) => r.devices)).not.toContain(victim.deviceId);
    expect(offlineAfterMs).toBeLessThanOrEqual(1.5 * KEEPALIVE_S * 1000 + 2000);
    expect((await replicas()).sort()).toEqual(agents.slice(1).map((a) => a.deviceId).sort());
  });
});
