import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ApiErrorBodySchema,
  ChatCompletionChunkSchema,
  ChatCompletionSchema,
  GatewayStatsSchema,
  OpenAiErrorBodySchema,
  OpenAiModelListSchema,
  RequestRecordSchema,
  RoutingPolicyViewSchema,
  UsageSchema,
  decodeTopic,
  topics,
  type InferenceCancel,
  type InferenceRequest,
  type InferenceResponse,
} from '@flotilla/protocol';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureModel } from '@flotilla/tools/models';
import { startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import { GatewayAccounting } from '../../src/gateway/accounting.js';
import { parsePrometheusText, sampleValue, type Family } from '../observability/prometheus-text.js';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { addCatalogModel, createGatewayKey, publishDesired, startCloudStandIn, startFailingDevice, type TestModelFile } from './support.js';

// The gateway end to end: the official `openai` client -> control plane (in process) -> MQTT -> 3 real device agents
// (child processes of the built agent) running generated GGUF models. On both database backends: accounting, usage
// queries and the stored routing block go through the database.
describeBackends('gateway (issue 5)', (backend) => {
  let t: TestControlPlane;
  let agents: SimAgent[] = [];
  let base: string;
  let client: OpenAI;
  let gatewayKey: string;
  let adminToken: string;
  let cloud: Awaited<ReturnType<typeof startCloudStandIn>>;
  let small: TestModelFile;

  const scrape = async (): Promise<Map<string, Family>> => parsePrometheusText(await (await fetch(`${t.cp.url}/metrics`)).text());
  const stats = async () => {
    const res = await fetch(`${t.cp.url}/api/v1/gateway/stats`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(res.status).toBe(200);
    // Every answer checked against the REST contract: a drift fails here.
    return GatewayStatsSchema.parse(await res.json());
  };

  beforeAll(async () => {
    cloud = await startCloudStandIn();
    const env: Record<string, string> = {
      FLOTILLA_GATEWAY_DEVICE_CONCURRENCY: '4',
      FLOTILLA_GATEWAY_TIMEOUT_MS: '20000',
      FLOTILLA_GATEWAY_FIRST_TOKEN_TIMEOUT_MS: '4000',
      FLOTILLA_GATEWAY_MAX_MESSAGES: '64',
      FLOTILLA_GATEWAY_CLOUD_URL: cloud.url,
      FLOTILLA_GATEWAY_CLOUD_MODEL: 'gpt-stand-in',
    };
    t = await startTestControlPlane(backend, env);
    ({ adminToken, gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir));
    client = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: gatewayKey, maxRetries: 0 });

    small = await ensureModel('tiny', { seed: 11 });
    const medium: TestModelFile = await ensureModel('tiny', { seed: 12 });
    await addCatalogModel(t.cp, 'tiny-s', 'small', small);
    await addCatalogModel(t.cp, 'tiny-m', 'medium', medium);
    // A large model nobody serves: requests for it go to the cloud stand-in.
    await addCatalogModel(t.cp, 'tiny-l', 'large', medium);

    base = await mkdtemp(join(tmpdir(), 'flotilla-gw-'));
    agents = await startAgents({ controlPlaneUrl: t.cp.url, adminToken, count: 3, baseDir: base });
    const [a1, a2, a3] = agents as [SimAgent, SimAgent, SimAgent];
    await pollUntil(async () => t.cp.broker.connectedClients >= 3, { timeoutMs: 30_000 });
    await publishDesired(t.cp, a1.deviceId, [
      { name: 'tiny-s', file: small },
      { name: 'tiny-m', file: medium },
    ]);
    await publishDesired(t.cp, a2.deviceId, [{ name: 'tiny-m', file: medium }]);
    await publishDesired(t.cp, a3.deviceId, [{ name: 'tiny-m', file: medium }]);
    await pollUntil(
      async () => {
        const s = await stats();
        return (s.replicas['tiny-m']?.length ?? 0) === 3 && (s.replicas['tiny-s']?.length ?? 0) === 1;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
  }, 120_000);

  afterAll(async () => {
    await stopAgents(agents).catch(() => undefined);
    await t?.dispose();
    await cloud?.close();
    if (base) await rm(base, { recursive: true, force: true });
  }, 60_000);

  const ask = { model: 'tiny-m', messages: [{ role: 'user' as const, content: 'Say hello.' }], max_tokens: 24, temperature: 0, seed: 7 };

  it('answers non-streaming and streaming chats with usage; the stream is the same text, once', async () => {
    const { data, response } = await client.chat.completions.create(ask).withResponse();
    ChatCompletionSchema.parse(data);
    expect(data.object).toBe('chat.completion');
    expect(data.model).toBe('tiny-m');
    expect(data.choices[0]?.message.role).toBe('assistant');
    expect(typeof data.choices[0]?.message.content).toBe('string');
    expect(data.usage?.prompt_tokens).toBeGreaterThan(0);
    expect(data.usage?.completion_tokens).toBeGreaterThan(0);
    expect(response.headers.get('x-flotilla-device')).toMatch(/^[a-z0-9]/);

    const stream = await client.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined | null;
    let finish: string | null | undefined;
    for await (const chunk of stream) {
      ChatCompletionChunkSchema.parse(chunk);
      text += chunk.choices[0]?.delta.content ?? '';
      finish ??= chunk.choices[0]?.finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe(data.choices[0]?.message.content);
    expect(finish).toBeTruthy();
    expect(usage?.completion_tokens).toBe(data.usage?.completion_tokens);
  });

  it('round-trips a tool call and returns JSON-schema output', async () => {
    const tools: OpenAI.Chat.ChatCompletionTool[] = [
      { type: 'function', function: { name: 'get_weather', description: 'weather for a city', parameters: { type: 'object', properties: { city: { enum: ['Paris', 'Rome'] } }, required: ['city'] } } },
    ];
    const first = await client.chat.completions.create({ model: 'tiny-m', messages: [{ role: 'user', content: 'Weather in Paris?' }], tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 64, temperature: 0 });
    const call = first.choices[0]?.message.tool_calls?.[0];
    ChatCompletionSchema.parse(first);
    expect(first.choices[0]?.finish_reason).toBe('tool_calls');
    expect(call?.type).toBe('function');
    if (call?.type !== 'function') throw new Error('no function call');
    expect(call.function.name).toBe('get_weather');
    expect(() => JSON.parse(call.function.arguments) as unknown).not.toThrow();
    const second = await client.chat.completions.create({
      model: 'tiny-m',
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [call] },
        { role: 'tool', tool_call_id: call.id, content: '{"tempC":21}' },
      ],
      tools,
      max_tokens: 16,
      temperature: 0,
    });
    expect(second.choices[0]?.message.role).toBe('assistant');

    const json = await client.chat.completions.create({
      model: 'tiny-m',
      messages: [{ role: 'user', content: 'A person as JSON.' }],
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: { type: 'object', properties: { name: { enum: ['Ada', 'Alan'] } }, required: ['name'], additionalProperties: false } } },
      max_tokens: 64,
      temperature: 0,
    });
    const parsed = JSON.parse(json.choices[0]?.message.content ?? '') as { name: unknown };
    expect(typeof parsed.name).toBe('string');
  });

  it('speaks OpenAI errors: key, unknown model, malformed JSON, 413, message count, context length, rate limit, allow-list', async () => {
    const bad = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: 'flt_key_nope', maxRetries: 0 });
    await expect(bad.chat.completions.create(ask)).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
    await expect(client.chat.completions.create({ ...ask, model: 'no-such-model' })).rejects.toMatchObject({ status: 404, code: 'model_not_found' });

    const post = (body: string) =>
      fetch(`${t.cp.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${gatewayKey}` }, body });
    const malformed = await post('{"model": "tiny-m", "messages": [');
    expect(malformed.status).toBe(400);
    expect(OpenAiErrorBodySchema.parse(await malformed.json()).error.message).toMatch(/JSON/);
    const huge = await post(JSON.stringify({ ...ask, messages: [{ role: 'user', content: 'x'.repeat(1_100_000) }] }));
    expect(huge.status).toBe(413);
    expect(OpenAiErrorBodySchema.parse(await huge.json()).error.type).toBe('invalid_request_error');

    const many = Array.from({ length: 65 }, () => ({ role: 'user' as const, content: 'hi' }));
    await expect(client.chat.completions.create({ ...ask, messages: many })).rejects.toMatchObject({ status: 400, param: 'messages' });
    await expect(client.chat.completions.create({ ...ask, messages: [{ role: 'user', content: 'word '.repeat(4000) }], max_tokens: 1500 })).rejects.toMatchObject({
      status: 400,
      code: 'context_length_exceeded',
    });
    await expect(client.chat.completions.create({ ...ask, temperature: 5 })).rejects.toMatchObject({ status: 400, param: 'temperature' });

    const limited = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: await createGatewayKey(t.cp, { rateLimitPerMinute: 2 }), maxRetries: 0 });
    await limited.chat.completions.create(ask);
    await limited.chat.completions.create(ask);
    const refused = await limited.chat.completions.create(ask).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
    expect(Number((refused as InstanceType<typeof OpenAI.RateLimitError>).headers?.get('retry-after'))).toBeGreaterThanOrEqual(1);

    const onlySmall = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: await createGatewayKey(t.cp, { modelAllowList: ['tiny-s'] }), maxRetries: 0 });
    await expect(onlySmall.chat.completions.create(ask)).rejects.toMatchObject({ status: 403, code: 'model_not_allowed' });
    const listed = await onlySmall.models.list();
    expect(listed.data.map((m) => m.id)).toEqual(['tiny-s']);
    const models = await fetch(`${t.cp.url}/v1/models`, { headers: { authorization: `Bearer ${gatewayKey}` } });
    expect(models.status).toBe(200);
    expect(OpenAiModelListSchema.parse(await models.json()).data.map((m) => m.id)).toEqual(expect.arrayContaining(['auto', 'tiny-s', 'tiny-m']));
    const refusedList = await fetch(`${t.cp.url}/v1/models`, { headers: { authorization: 'Bearer flt_key_nope' } });
    expect(refusedList.status).toBe(401);
    expect(OpenAiErrorBodySchema.parse(await refusedList.json()).error.code).toBe('invalid_api_key');
    const all = await client.models.list();
    expect(all.data.map((m) => m.id)).toEqual(expect.arrayContaining(['auto', 'small', 'medium', 'large', 'tiny-s', 'tiny-m', 'tiny-l']));
  });

  it('spreads concurrent load over the 3 devices and keeps a conversation on its device', async () => {
    const before = await stats();
    const count = (s: typeof before, d: string) => s.byDevice[d]?.requests ?? 0;
    await Promise.all(Array.from({ length: 24 }, (_, i) => client.chat.completions.create({ ...ask, messages: [{ role: 'user', content: `Count to ${i}.` }], max_tokens: 32 })));
    const after = await stats();
    const spread = agents.map((a) => count(after, a.deviceId) - count(before, a.deviceId));
    expect(spread.reduce((x, y) => x + y, 0)).toBe(24);
    // least-outstanding over 3 equal devices (concurrency 4 each): none idle, none with most of the work
    for (const n of spread) {
      expect(n).toBeGreaterThanOrEqual(4);
      expect(n).toBeLessThanOrEqual(12);
    }

    const devices = new Set<string | null>();
    const history: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Hello there.' }];
    for (let turn = 0; turn < 4; turn++) {
      const { data, response } = await client.chat.completions.create({ ...ask, user: 'alice', messages: history }).withResponse();
      devices.add(response.headers.get('x-flotilla-device'));
      history.push({ role: 'assistant', content: data.choices[0]?.message.content ?? '' }, { role: 'user', content: `Turn ${turn}.` });
    }
    expect(devices.size).toBe(1);
  }, 60_000);

  it('routes auto by complexity, escalates when the small tier is saturated, and falls back to the cloud', async () => {
    const route = async (body: Partial<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming>) => {
      const { response } = await client.chat.completions.create({ ...ask, model: 'auto', ...body } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming).withResponse();
      return response.headers.get('x-flotilla-model');
    };
    expect(await route({ messages: [{ role: 'user', content: 'Hi!' }] })).toBe('tiny-s');
    expect(await route({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }] })).toBe('tiny-m');
    expect(await route({ response_format: { type: 'json_object' } })).toBe('tiny-m');
    expect(await route({ messages: [{ role: 'user', content: 'Please summarize: ' + 'lorem ipsum '.repeat(150) }] })).toBe('tiny-m');
    expect(await route({ model: 'small' })).toBe('tiny-s');

    // The small tier has one device with 4 slots: 12 at once spill into the medium tier.
    const models = await Promise.all(
      Array.from({ length: 12 }, (_, i) => route({ messages: [{ role: 'user', content: `Hi ${i}` }], max_tokens: 64 })),
    );
    expect(models).toContain('tiny-s');
    expect(models).toContain('tiny-m');

    // No large replica anywhere: the cloud stand-in answers, streaming and not.
    const callsBefore = cloud.calls;
    const { data, response } = await client.chat.completions.create({ ...ask, model: 'large' }).withResponse();
    expect(data.choices[0]?.message.content).toBe('cloud answer');
    expect(response.headers.get('x-flotilla-device')).toBe('cloud');
    // The request record lists the cloud as the one attempt, with no device.
    const record = await api(t.cp, `/api/v1/requests/${response.headers.get('x-request-id') ?? ''}`, { token: adminToken });
    expect(RequestRecordSchema.parse(record.body)).toMatchObject({ cloud: true, deviceId: null, attempts: [{ attempt: 1, deviceId: null, end: 'ok', tokens: data.usage?.completion_tokens }] });
    const stream = await client.chat.completions.create({ ...ask, model: 'tiny-l', stream: true });
    let text = '';
    for await (const c of stream) text += ChatCompletionChunkSchema.parse(c).choices[0]?.delta.content ?? '';
    expect(text).toBe('cloud answer');
    expect(cloud.calls).toBe(callsBefore + 2);
  }, 60_000);

  it('records every request with model, tier, device, latency, tokens and outcome', async () => {
    const { response } = await client.chat.completions.create(ask).withResponse();
    const requestId = response.headers.get('x-request-id') ?? '';
    await pollUntil(async () => (await t.cp.database.prisma.inferenceRequest.count({ where: { requestId } })) === 1, { timeoutMs: 5000 });
    const row = await t.cp.database.prisma.inferenceRequest.findUniqueOrThrow({ where: { requestId } });
    expect(row).toMatchObject({ requestedModel: 'tiny-m', model: 'tiny-m', tier: 'medium', outcome: 'success', retries: 0, stream: false });
    expect(row.deviceId).toBe(response.headers.get('x-flotilla-device'));
    expect(row.tokensOut).toBeGreaterThan(0);
    expect(row.latencyMs).toBeGreaterThanOrEqual(row.ttftMs ?? 0);
  });

  it('exposes per-model and per-device series in /metrics and usage over a window in the REST API', async () => {
    const before = await scrape();
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) => client.chat.completions.create({ ...ask, messages: [{ role: 'user', content: `Metrics ${i}.` }] }).withResponse()),
    );
    const perDevice = new Map<string, { n: number; tokensIn: number; tokensOut: number }>();
    for (const { data, response } of answers) {
      const device = response.headers.get('x-flotilla-device') ?? '';
      const c = perDevice.get(device) ?? { n: 0, tokensIn: 0, tokensOut: 0 };
      perDevice.set(device, { n: c.n + 1, tokensIn: c.tokensIn + (data.usage?.prompt_tokens ?? 0), tokensOut: c.tokensOut + (data.usage?.completion_tokens ?? 0) });
    }
    // Rejected before any device: once with the model chosen (context too long), once without (unknown name).
    await expect(client.chat.completions.create({ ...ask, messages: [{ role: 'user', content: 'word '.repeat(4000) }], max_tokens: 1500 })).rejects.toMatchObject({ status: 400 });
    await expect(client.chat.completions.create({ ...ask, model: 'no-such-model-for-metrics' })).rejects.toMatchObject({ status: 404 });
    const text = await (await fetch(`${t.cp.url}/metrics`)).text();
    const after = parsePrometheusText(text);
    const delta = (name: string, labels: Record<string, string>) => (sampleValue(after, name, labels) ?? 0) - (sampleValue(before, name, labels) ?? 0);

    expect(perDevice.size).toBeGreaterThan(0);
    for (const [device, c] of perDevice) {
      const labels = { model: 'tiny-m', device };
      expect(delta('flotilla_gateway_requests_total', { ...labels, outcome: 'success' })).toBe(c.n);
      expect(delta('flotilla_gateway_request_duration_seconds_count', labels)).toBe(c.n);
      expect(delta('flotilla_gateway_time_to_first_token_seconds_count', labels)).toBe(c.n);
      expect(delta('flotilla_gateway_request_duration_seconds_sum', labels)).toBeGreaterThan(0);
      expect(delta('flotilla_gateway_tokens_total', { ...labels, direction: 'in' })).toBe(c.tokensIn);
      expect(delta('flotilla_gateway_tokens_total', { ...labels, direction: 'out' })).toBe(c.tokensOut);
    }
    expect(delta('flotilla_gateway_requests_total', { model: 'tiny-m', device: 'none', outcome: 'rejected' })).toBe(1);
    expect(delta('flotilla_gateway_requests_total', { model: 'none', device: 'none', outcome: 'rejected' })).toBe(1);
    expect(text).not.toContain('no-such-model-for-metrics'); // a client's name never becomes a label value
    const types = (names: string[]) => names.map((n) => after.get(n)?.type);
    expect(types(['flotilla_gateway_requests_total', 'flotilla_gateway_retries_total', 'flotilla_gateway_tokens_total'])).toEqual(['counter', 'counter', 'counter']);
    expect(types(['flotilla_gateway_request_duration_seconds', 'flotilla_gateway_time_to_first_token_seconds'])).toEqual(['histogram', 'histogram']);
    expect(
      types(['flotilla_gateway_outstanding_requests', 'flotilla_gateway_device_outstanding_requests', 'flotilla_gateway_queue_length', 'flotilla_gateway_jobs_in_flight']),
    ).toEqual(['gauge', 'gauge', 'gauge', 'gauge']);
    // Idle now: every device holds no slot and nothing waits.
    for (const a of agents) expect(sampleValue(after, 'flotilla_gateway_device_outstanding_requests', { device: a.deviceId }) ?? 0).toBe(0);
    expect(after.get('flotilla_gateway_queue_length')?.samples.every((s) => s.value === 0)).toBe(true);
    expect(sampleValue(after, 'flotilla_gateway_device_concurrency_limit')).toBe(4);

    // The REST view over a window agrees with the recorded rows.
    const res = await api(t.cp, '/api/v1/usage?window=1h', { token: adminToken });
    expect(res.status).toBe(200);
    const usage = { body: UsageSchema.parse(res.body) };
    const prisma = t.cp.database.prisma;
    expect(usage.body.totals.requests).toBe(await prisma.inferenceRequest.count());
    const m = usage.body.byModel.find((x) => x.model === 'tiny-m');
    expect(m?.requests).toBe(await prisma.inferenceRequest.count({ where: { model: 'tiny-m' } }));
    expect(m?.successes).toBe(await prisma.inferenceRequest.count({ where: { model: 'tiny-m', outcome: 'success' } }));
    expect(m?.rejected).toBeGreaterThanOrEqual(1);
    expect(m?.latencyP50Ms).toBeGreaterThan(0);
    expect(m?.latencyP95Ms).toBeGreaterThanOrEqual(m?.latencyP50Ms ?? 0);
    for (const a of agents) {
      const d = usage.body.byDevice.find((x) => x.deviceId === a.deviceId);
      expect(d?.deviceName).toBe(a.name);
      expect(d?.requests).toBe(await prisma.inferenceRequest.count({ where: { deviceId: a.deviceId } }));
      expect(d?.tokensOut).toBe((await prisma.inferenceRequest.aggregate({ where: { deviceId: a.deviceId }, _sum: { tokensOut: true } }))._sum.tokensOut);
    }
    expect(usage.body.byDevice.find((x) => x.deviceId === 'cloud')?.requests).toBeGreaterThanOrEqual(2);
    const bad = await api(t.cp, '/api/v1/usage?window=forever', { token: adminToken });
    expect(bad.status).toBe(400);
    expect(ApiErrorBodySchema.parse(bad.body).error.code).toBe('INVALID_REQUEST');
    expect((await api(t.cp, '/api/v1/usage')).status).toBe(401);
  }, 30_000);

  it('routes by the fleet file routing block (tiers, default tier, tools tier, cloud, concurrency) and escalates a tier when every replica fails', async () => {
    const policy = async () => RoutingPolicyViewSchema.parse((await api(t.cp, '/api/v1/gateway/routing', { token: adminToken })).body);
    let applied = 0;
    const apply = async (routing: Record<string, unknown>) => {
      // JSON is YAML: the fleet file route takes it as it is.
      const res = await api<{ changed: boolean }>(t.cp, '/api/v1/fleet/apply', { token: adminToken, body: { yaml: JSON.stringify({ apiVersion: 'flotilla/v1', kind: 'Fleet', routing }) } });
      expect(res.status).toBe(200);
      applied++;
      const marker = 20_000 + applied; // each block carries its own timeout, so the reload is seen
      expect(routing.requestTimeoutMs).toBe(marker);
      await pollUntil(async () => (await policy()).timeoutMs === marker, { timeoutMs: 5000, intervalMs: 20 });
    };
    const route = async (body: Partial<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming>) => {
      const { response } = await client.chat.completions.create({ ...ask, model: 'auto', ...body } as OpenAI.Chat.ChatCompletionCreateParamsNonStreaming).withResponse();
      return { model: response.headers.get('x-flotilla-model'), route: response.headers.get('x-flotilla-route') ?? '' };
    };
    const hi = { messages: [{ role: 'user' as const, content: 'Hi!' }] };
    const withTools = { tools: [{ type: 'function' as const, function: { name: 'f', parameters: { type: 'object', properties: {} } } }] };
    expect(await policy()).toMatchObject({ source: 'environment', toolsMinTier: 'medium', deviceConcurrency: 4, cloud: { baseUrl: cloud.url, apiKeySet: false } });

    // Swapped tiers, tools allowed on small, no cloud fallback, 3 requests per device.
    await apply({ tiers: { small: ['tiny-m'], medium: ['tiny-s'] }, auto: { toolsMinTier: 'small' }, maxConcurrentPerDevice: 3, requestTimeoutMs: 20_001 });
    expect(await policy()).toMatchObject({ source: 'fleet-file', tierModels: { small: ['tiny-m'], medium: ['tiny-s'] }, deviceConcurrency: 3, cloud: null });
    expect((await route(hi)).model).toBe('tiny-m');
    expect((await route({ ...hi, ...withTools })).model).toBe('tiny-m');
    expect((await route({ messages: [{ role: 'user', content: 'Please summarize this.' }] })).model).toBe('tiny-s');
    // nothing serves large and there is no cloud fallback: the largest served tier below answers, and the route says so
    expect(await route({ model: 'large' })).toMatchObject({ model: 'tiny-s', route: expect.stringMatching(/no large or larger model served/) });
    expect(sampleValue(await scrape(), 'flotilla_gateway_device_concurrency_limit')).toBe(3);

    // The default tier and the tools tier move `auto` up; a token limit on small sends a long prompt past it.
    await apply({ defaultTier: 'medium', auto: { toolsMinTier: 'medium', maxPromptTokens: { small: 20 }, strictMinTier: true }, requestTimeoutMs: 20_002 });
    expect(await route(hi)).toMatchObject({ model: 'tiny-m', route: 'default tier medium -> medium' });
    // a strict minimum tier: nothing at or above large is served, so 503
    await expect(client.chat.completions.create({ ...ask, model: 'large' })).rejects.toMatchObject({ status: 503, code: 'no_device_available' });
    await apply({ auto: { toolsMinTier: 'medium', maxPromptTokens: { small: 20 } }, requestTimeoutMs: 20_003 });
    expect((await route(hi)).model).toBe('tiny-s');
    expect((await route({ ...hi, ...withTools })).model).toBe('tiny-m');
    expect(await route({ messages: [{ role: 'user', content: 'a fairly long but plain message '.repeat(4) }] })).toMatchObject({ model: 'tiny-m', route: expect.stringMatching(/> small limit 20/) });

    // Every replica of the small tier fails: the request moves up to medium, invisibly; with escalation off it fails.
    const created = await api(t.cp, '/api/v1/models', {
      token: adminToken,
      body: { name: 'broken-s', sourceUrl: `file://${small.path}`, sha256: small.sha256, sizeBytes: small.sizeBytes, quantization: 'Q8_0', memoryBytes: small.sizeBytes * 4, contextLength: 2048, tier: 'small' },
    });
    expect(created.status).toBe(201);
    const broken = await startFailingDevice(t.cp, 'scripted-broken-1', ['broken-s'], { code: 'GENERATION_FAILED', message: 'scripted failure', retryable: true });
    try {
      await pollUntil(async () => ((await stats()).replicas['broken-s']?.length ?? 0) === 1, { timeoutMs: 5000, intervalMs: 20 });
      await apply({ tiers: { small: ['broken-s'] }, requestTimeoutMs: 20_004 });
      const { data, response } = await client.chat.completions.create({ ...ask, ...hi, model: 'auto' }).withResponse();
      expect(data.model).toBe('tiny-m');
      expect(response.headers.get('x-flotilla-route')).toMatch(/broken-s failed -> medium \(escalated\)/);
      expect(broken.jobs).toHaveLength(1);
      await apply({ tiers: { small: ['broken-s'] }, auto: { escalateOnFailure: false }, requestTimeoutMs: 20_005 });
      await expect(client.chat.completions.create({ ...ask, ...hi, model: 'auto' })).rejects.toMatchObject({ status: 503, code: 'no_device_available' });
      expect(broken.jobs).toHaveLength(2);
      const requestId = broken.jobs[0] ?? '';
      await t.cp.app.get(GatewayAccounting).flush();
      expect(await t.cp.database.prisma.inferenceRequest.findUnique({ where: { requestId } })).toMatchObject({ model: 'tiny-m', tier: 'medium', outcome: 'success', retries: 1 });
    } finally {
      await broken.stop();
    }

    // Back to what the environment said, now through the block (a stored block is never removed, only replaced).
    await apply({
      auto: { toolsMinTier: 'medium' },
      cloudFallback: { enabled: true, baseUrl: cloud.url, model: 'gpt-stand-in' },
      maxConcurrentPerDevice: 4,
      requestTimeoutMs: 20_006,
    });
    expect((await route(hi)).model).toBe('tiny-s');
    const { response } = await client.chat.completions.create({ ...ask, model: 'large' }).withResponse();
    expect(response.headers.get('x-flotilla-device')).toBe('cloud');
  }, 60_000);

  it('cancels the job on the device within 1 s of the client going away (stream closed, non-streamed request aborted)', async () => {
    type Seen =
      | { at: number; deviceId: string; kind: 'request'; value: InferenceRequest }
      | { at: number; deviceId: string; kind: 'cancel'; value: InferenceCancel }
      | { at: number; deviceId: string; kind: 'response'; value: InferenceResponse };
    const seen: Seen[] = [];
    const watch = (filter: string) =>
      t.cp.broker.subscribe(filter, (m) => {
        const at = Date.now();
        const d = decodeTopic(m.topic, m.payload);
        if (!d.ok) return;
        const { deviceId, kind, value } = d.value;
        if (kind === 'inferenceRequest') seen.push({ at, deviceId, kind: 'request', value });
        else if (kind === 'inferenceCancel') seen.push({ at, deviceId, kind: 'cancel', value });
        else if (kind === 'inferenceResponse') seen.push({ at, deviceId, kind: 'response', value });
      });
    const stops = await Promise.all([watch(topics.allDevices.inferenceRequest), watch(topics.allDevices.inferenceCancel), watch(topics.allDevices.inferenceResponse)]);
    const of = (requestId: string) => seen.filter((e) => e.value.requestId === requestId);
    const firstChunk = (requestId: string) => of(requestId).find((e) => e.kind === 'response' && e.value.type === 'chunk');
    /** After the client left at `leftAt`: the cancel went out and the device answered CANCELLED (its slot is free), both within 1 s; nothing generated after. */
    const expectCancelled = async (requestId: string, deviceId: string, leftAt: number) => {
      const cancelled = await pollUntil(() => of(requestId).find((e) => e.kind === 'response' && e.value.type === 'error' && e.value.code === 'CANCELLED'), {
        timeoutMs: 5000,
        intervalMs: 5,
        what: `CANCELLED from the device for ${requestId}`,
      });
      const cancel = of(requestId).find((e) => e.kind === 'cancel');
      expect(cancel).toMatchObject({ deviceId, value: { reason: 'client-disconnected' } });
      expect(cancelled.deviceId).toBe(deviceId);
      expect((cancel?.at ?? Infinity) - leftAt).toBeLessThan(1000);
      expect(cancelled.at - leftAt).toBeLessThan(1000);
      await new Promise((r) => setTimeout(r, 200));
      const after = of(requestId).filter((e) => e.kind === 'response' && e.at > cancelled.at);
      expect(after).toEqual([]); // the device stopped generating
      expect(of(requestId).some((e) => e.kind === 'response' && e.value.type === 'result')).toBe(false); // cut short, not finished
      expect((await stats()).devices[deviceId]?.outstanding).toBe(0);
      await t.cp.app.get(GatewayAccounting).flush();
      expect(await t.cp.database.prisma.inferenceRequest.findUnique({ where: { requestId } })).toMatchObject({ outcome: 'cancelled', deviceId });
    };
    // Long answers (~1800 tokens, seconds on these devices): the client leaves after the first tokens.
    const long = { ...ask, max_tokens: 1800 };
    try {
      // Streamed: the SSE socket closes.
      const { data: stream, response } = await client.chat.completions
        .create({ ...long, stream: true, messages: [{ role: 'user', content: 'Tell an endless story, streamed.' }] })
        .withResponse();
      const requestId = response.headers.get('x-request-id') ?? '';
      const deviceId = response.headers.get('x-flotilla-device') ?? '';
      // Read by hand: leaving a for-await loop would already abort the request.
      const chunks = stream[Symbol.asyncIterator]();
      for (let next = await chunks.next(); !next.done && !next.value.choices[0]?.delta.content; next = await chunks.next());
      // While it runs the gauges show its slot.
      const busy = await scrape();
      expect(sampleValue(busy, 'flotilla_gateway_outstanding_requests', { model: 'tiny-m', device: deviceId })).toBe(1);
      expect(sampleValue(busy, 'flotilla_gateway_jobs_in_flight')).toBe(1);
      stream.controller.abort();
      const closedAt = Date.now();
      await expectCancelled(requestId, deviceId, closedAt);

      // Non-streamed: the client aborts its HTTP request once the device is generating.
      const aborter = new AbortController();
      const prompt = 'Tell an endless story, not streamed.';
      const pending = client.chat.completions.create({ ...long, messages: [{ role: 'user', content: prompt }] }, { signal: aborter.signal }).catch((e: unknown) => e);
      const job = await pollUntil(() => seen.find((e) => e.kind === 'request' && e.value.messages[0]?.content === prompt), { timeoutMs: 5000, intervalMs: 5 });
      await pollUntil(() => firstChunk(job.value.requestId), { timeoutMs: 5000, intervalMs: 5, what: 'the first token' });
      aborter.abort();
      const abortedAt = Date.now();
      expect(await pending).toBeInstanceOf(OpenAI.APIUserAbortError);
      await expectCancelled(job.value.requestId, job.deviceId, abortedAt);
    } finally {
      for (const stop of stops) await stop();
    }
    const counted = (await scrape()).get('flotilla_gateway_requests_total')?.samples.filter((x) => x.labels.outcome === 'cancelled') ?? [];
    expect(counted.reduce((n, x) => n + x.value, 0)).toBeGreaterThanOrEqual(2);
  }, 30_000);

  it('survives SIGKILL of a device with 50 requests in flight: no lost non-streamed request, streams complete or end with one error', async () => {
    const started = Date.now();
    const long = { ...ask, max_tokens: 160, messages: [{ role: 'user' as const, content: 'Tell a long story.' }] };
    const nonStreamed = Array.from({ length: 25 }, () => client.chat.completions.create(long).then((r) => ({ ok: true as const, r, at: Date.now() })));
    const streamed = Array.from({ length: 25 }, async () => {
      let text = '';
      let finished = false;
      try {
        const s = await client.chat.completions.create({ ...long, stream: true });
        for await (const c of s) {
          text += c.choices[0]?.delta.content ?? '';
          if (c.choices[0]?.finish_reason) finished = true;
        }
        return { ok: true as const, text, finished, at: Date.now() };
      } catch (error) {
        return { ok: false as const, text, error, at: Date.now() };
      }
    });
    // Kill the device carrying the most work once it is busy.
    await pollUntil(async () => Object.values((await stats()).devices).reduce((n, d) => n + d.outstanding, 0) >= 10, { timeoutMs: 10_000, intervalMs: 20 });
    const s = await stats();
    const victim = agents.reduce((best, a) => ((s.devices[a.deviceId]?.outstanding ?? 0) > (s.devices[best.deviceId]?.outstanding ?? 0) ? a : best));
    expect(s.devices[victim.deviceId]?.outstanding).toBeGreaterThan(0);
    await victim.kill();

    const results = await Promise.all(nonStreamed);
    for (const r of results) {
      expect(r.ok).toBe(true);
      expect(r.r.choices[0]?.message.content?.length).toBeGreaterThan(0);
    }
    const streams = await Promise.all(streamed);
    for (const r of streams) {
      if (r.ok) expect(r.finished).toBe(true);
      else expect(r.error).toBeInstanceOf(OpenAI.APIError); // one clean error event, not a hang or a broken socket
    }
    // every request ended well inside its 20 s deadline
    for (const r of [...results, ...streams]) expect(r.at - started).toBeLessThan(20_000);
    expect(streams.filter((r) => r.ok).length).toBeGreaterThan(0);
    const retried = await t.cp.database.prisma.inferenceRequest.count({ where: { retries: { gt: 0 } } });
    expect(retried).toBeGreaterThan(0);
    // The failovers appear in /metrics as they are in the rows.
    await t.cp.app.get(GatewayAccounting).flush();
    const retries = (await t.cp.database.prisma.inferenceRequest.aggregate({ _sum: { retries: true } }))._sum.retries ?? 0;
    const series = (await scrape()).get('flotilla_gateway_retries_total')?.samples ?? [];
    expect(series.reduce((n, x) => n + x.value, 0)).toBe(retries);
  }, 60_000);
});
