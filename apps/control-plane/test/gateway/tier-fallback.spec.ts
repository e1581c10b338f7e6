import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureModel } from '@flotilla/tools/models';
import { startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RoutingPolicyViewSchema } from '@flotilla/protocol';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { addCatalogModel, createGatewayKey, publishDesired, startCloudStandIn, startFailingDevice, type ScriptedDevice } from './support.js';

// Issue 8, points 7 and 11 (allow-list): a fleet whose only served model is small (the `npm start` default) answers
// `auto` requests the rules send to a larger tier, and an API key's allow-list binds tier routing and the cloud fallback.
// One real agent serves the small model; scripted devices (only broker messages) serve models a restricted key must
// never reach, and record every job they are sent.
describeBackends('tier fallback and allow-lists (issue 8)', (backend) => {
  let t: TestControlPlane;
  let agents: SimAgent[] = [];
  let base: string;
  let adminToken: string;
  let gatewayKey: string;
  let cloud: Awaited<ReturnType<typeof startCloudStandIn>>;

  const json = {
    response_format: { type: 'json_schema' as const, json_schema: { name: 'answer', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } } },
  };
  const ask = { messages: [{ role: 'user' as const, content: 'Hi!' }], max_tokens: 16, temperature: 0, seed: 1 };
  const clientFor = (apiKey: string) => new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey, maxRetries: 0 });
  const create = async (apiKey: string, body: Partial<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming>) => {
    const { response } = await clientFor(apiKey)
      .chat.completions.create({ ...ask, model: 'auto', ...body } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming)
      .withResponse();
    return { model: response.headers.get('x-flotilla-model'), device: response.headers.get('x-flotilla-device'), route: response.headers.get('x-flotilla-route') ?? '' };
  };
  const replicas = async () =>
    (await api<{ replicas: Record<string, string[]> }>(t.cp, '/api/v1/gateway/stats', { token: adminToken })).body.replicas;

  beforeAll(async () => {
    cloud = await startCloudStandIn();
    t = await startTestControlPlane(backend, { FLOTILLA_GATEWAY_FIRST_TOKEN_TIMEOUT_MS: '4000', FLOTILLA_GATEWAY_TIMEOUT_MS: '20000' });
    ({ adminToken, gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir));
    const small = await ensureModel('tiny', { seed: 31 });
    await addCatalogModel(t.cp, 'only-s', 'small', small);
    base = await mkdtemp(join(tmpdir(), 'flotilla-tiers-'));
    agents = await startAgents({ controlPlaneUrl: t.cp.url, adminToken, count: 1, baseDir: base });
    const [agent] = agents as [SimAgent];
    await pollUntil(async () => t.cp.broker.connectedClients >= 1, { timeoutMs: 30_000 });
    await publishDesired(t.cp, agent.deviceId, [{ name: 'only-s', file: small }]);
    await pollUntil(async () => ((await replicas())['only-s']?.length ?? 0) === 1, { timeoutMs: 60_000, intervalMs: 200, what: 'only-s ready' });
  }, 120_000);
  afterAll(async () => {
    await stopAgents(agents);
    await t?.dispose();
    await cloud?.close();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('answers auto with json_schema or tools from the only (small) model and says so in x-flotilla-route', async () => {
    const agent = agents[0] as SimAgent;
    const structured = await create(gatewayKey, json);
    expect(structured).toMatchObject({ model: 'only-s', device: agent.deviceId });
    expect(structured.route).toMatch(/structured output \(json_schema\) -> small \(no medium or larger model served/);
    const tools = await create(gatewayKey, { tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }] });
    expect(tools).toMatchObject({ model: 'only-s', route: expect.stringMatching(/tools requested -> small \(no medium/) });
    // a tier name falls back the same way
    expect(await create(gatewayKey, { model: 'large' })).toMatchObject({ model: 'only-s', route: expect.stringMatching(/tier large requested -> small/) });
  }, 60_000);

  it('keeps a key with an allow-list to its models through auto, tier names and the cloud fallback', async () => {
    const agent = agents[0] as SimAgent;
    const medium = await ensureModel('tiny', { seed: 32 });
    await addCatalogModel(t.cp, 'other-m', 'medium', medium);
    await addCatalogModel(t.cp, 'other-l', 'large', medium);
    const scripted: ScriptedDevice[] = [
      await startFailingDevice(t.cp, 'scripted-other-m', ['other-m'], { code: 'GENERATION_FAILED', message: 'scripted failure', retryable: true }),
      await startFailingDevice(t.cp, 'scripted-other-l', ['other-l'], { code: 'GENERATION_FAILED', message: 'scripted failure', retryable: true }),
    ];
    const jobs = () => scripted.reduce((n, d) => n + d.jobs.length, 0);
    try {
      await pollUntil(async () => {
        const r = await replicas();
        return (r['other-m']?.length ?? 0) === 1 && (r['other-l']?.length ?? 0) === 1;
      }, { timeoutMs: 5000, intervalMs: 20, what: 'scripted replicas' });

      // Names only virtual models: may ask by tier, but no tier or escalation reaches a model it does not name.
      const virtualOnly = await createGatewayKey(t.cp, { modelAllowList: ['auto', 'small', 'medium'] });
      await expect(create(virtualOnly, json)).rejects.toMatchObject({ status: 403, code: 'model_not_allowed' });
      await expect(create(virtualOnly, { model: 'small' })).rejects.toMatchObject({ status: 403, code: 'model_not_allowed' });
      // Names the small model: medium is served, but not to this key; it gets the small model, never other-m/-l.
      const smallOnly = await createGatewayKey(t.cp, { modelAllowList: ['auto', 'medium', 'only-s'] });
      expect(await create(smallOnly, json)).toMatchObject({ model: 'only-s', device: agent.deviceId });
      expect(await create(smallOnly, { model: 'medium' })).toMatchObject({ model: 'only-s' });
      expect(jobs()).toBe(0);

      // Cloud fallback on (through the fleet file), nothing serves large: an unrestricted key's large request goes to
      // the cloud...
      await (scripted[1] as ScriptedDevice).stop();
      await pollUntil(async () => (await replicas())['other-l'] === undefined, { timeoutMs: 5000, intervalMs: 20, what: 'other-l gone' });
      const res = await api(t.cp, '/api/v1/fleet/apply', {
        token: adminToken,
        body: { yaml: JSON.stringify({ apiVersion: 'flotilla/v1', kind: 'Fleet', routing: { cloudFallback: { enabled: true, baseUrl: cloud.url, model: 'gpt-stand-in' }, requestTimeoutMs: 20_001 } }) },
      });
      expect(res.status).toBe(200);
      await pollUntil(async () => RoutingPolicyViewSchema.parse((await api(t.cp, '/api/v1/gateway/routing', { token: adminToken })).body).timeoutMs === 20_001, { timeoutMs: 5000, intervalMs: 20 });
      const calls = cloud.calls;
      expect(await create(gatewayKey, { model: 'large' })).toMatchObject({ device: 'cloud' });
      expect(cloud.calls).toBe(calls + 1);
      // ...a key whose list does not name the cloud model never reaches it: its best allowed model answers
      const noCloud = await createGatewayKey(t.cp, { modelAllowList: ['auto', 'large', 'only-s'] });
      expect(await create(noCloud, { model: 'large' })).toMatchObject({ model: 'only-s', device: agent.deviceId });
      expect(cloud.calls).toBe(calls + 1);
      // ...and a key that names `cloud:<model>` may use it
      const withCloud = await createGatewayKey(t.cp, { modelAllowList: ['large', 'only-s', 'cloud:gpt-stand-in'] });
      expect(await create(withCloud, { model: 'large' })).toMatchObject({ device: 'cloud' });
      expect(cloud.calls).toBe(calls + 2);
      expect(jobs()).toBe(0);
    } finally {
      await (scripted[0] as ScriptedDevice).stop();
    }
  }, 90_000);
});
