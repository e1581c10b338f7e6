import { PROTOCOL_VERSION, RequestRecordSchema, decode, encode, topics, type InferenceRequest } from '@flotilla/protocol';
import { makeModelState, makeModelStatus, makeStatus } from '@flotilla/protocol/testing';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ControlPlane } from '../../src/app/create-app.js';
import { adminLogin, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';

const MODEL = 'scripted-story';
/** a second pair for the streamed test: the first pair's dead device sits in its failure cooldown */
const MODEL_2 = 'scripted-story-2';
const PROMPT_TOKENS = 12;

/**
 * Two devices that exist as the messages an agent would publish, through the control plane's broker. A job without a
 * continuation gets three chunks of two tokens each, then the device goes offline (its will); a continuation is
 * answered with the rest of the story. Real agents cannot be told where to die; the gateway's bookkeeping is
 * what is checked here.
 */
async function storyDevice(cp: ControlPlane, deviceId: string, model: string, jobs: { deviceId: string; job: InferenceRequest }[]): Promise<() => Promise<void>> {
  const sessionId = `sess-${deviceId}`;
  const send = (message: unknown) => cp.broker.publish(topics.inferenceResponse(deviceId), encode('inferenceResponse', message as never), { qos: 1 });
  const unsubscribe = await cp.broker.subscribe(topics.inferenceRequest(deviceId), (m) => {
    const decoded = decode('inferenceRequest', m.payload);
    if (!decoded.ok) return;
    const job = decoded.value;
    jobs.push({ deviceId, job });
    const base = { v: PROTOCOL_VERSION, requestId: job.requestId, attempt: job.attempt };
    void (async () => {
      if (job.continuation) {
        await send({ ...base, type: 'chunk', seq: 0, tokens: 2, delta: { content: ' time.' } });
        await send({
          ...base,
          type: 'result',
          finishReason: 'stop',
          message: { role: 'assistant', content: `${job.continuation.content} time.` },
          usage: { promptTokens: PROMPT_TOKENS, completionTokens: 2 },
          timings: { ttftMs: 1, totalMs: 2 },
          chunkCount: 1,
        });
        return;
      }
      for (const [seq, content] of ['Once', ' upon', ' a'].entries()) await send({ ...base, type: 'chunk', seq, tokens: 2, delta: { content } });
      await new Promise((r) => setTimeout(r, 50));
      await cp.broker.publish(topics.status(deviceId), encode('status', makeStatus({ state: 'offline', sessionId, ts: Date.now(), reason: 'connection-lost' })), { qos: 1, retain: true });
      await new Promise((r) => setTimeout(r, 300));
      await cp.broker.publish(topics.status(deviceId), encode('status', makeStatus({ state: 'online', sessionId, ts: Date.now() })), { qos: 1, retain: true });
    })().catch(() => undefined); // the broker may close under a device still scripting its return
  });
  const state = makeModelState({ ts: Date.now(), models: [makeModelStatus('ready', { name: model, sha256: 'b'.repeat(64), since: Date.now() })] });
  await cp.broker.publish(topics.modelState(deviceId), encode('modelState', state), { qos: 1, retain: true });
  await cp.broker.publish(topics.status(deviceId), encode('status', makeStatus({ state: 'online', sessionId, ts: Date.now() })), { qos: 1, retain: true });
  return async () => {
    await unsubscribe();
    await cp.broker.publish(topics.status(deviceId), '', { qos: 1, retain: true });
    await cp.broker.publish(topics.modelState(deviceId), '', { qos: 1, retain: true });
  };
}

// [P-3.6 continuation] A stream cut mid-answer continues on another device: with what is left of max_tokens, usage is
// the tokens delivered, the prompt counted once, and the request record lists both attempts.
describeBackends('gateway continuation (issue 8, point 5)', (backend) => {
  let t: TestControlPlane;
  let client: OpenAI;
  let adminToken: string;
  const jobs: { deviceId: string; job: InferenceRequest }[] = [];
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    t = await startTestControlPlane(backend, { FLOTILLA_GATEWAY_TIMEOUT_MS: '20000', FLOTILLA_GATEWAY_FIRST_TOKEN_TIMEOUT_MS: '4000' });
    let gatewayKey: string;
    ({ adminToken, gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir));
    client = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: gatewayKey, maxRetries: 0 });
    for (const id of ['story-dev-a', 'story-dev-b']) stops.push(await storyDevice(t.cp, id, MODEL, jobs));
    for (const id of ['story-dev-c', 'story-dev-d']) stops.push(await storyDevice(t.cp, id, MODEL_2, jobs));
    await pollUntil(
      async () => {
        const res = await fetch(`${t.cp.url}/api/v1/gateway/stats`, { headers: { authorization: `Bearer ${adminToken}` } });
        const s = (await res.json()) as { replicas: Record<string, string[]> };
        return (s.replicas[MODEL]?.length ?? 0) === 2 && (s.replicas[MODEL_2]?.length ?? 0) === 2;
      },
      { timeoutMs: 10_000, intervalMs: 50 },
    );
  }, 60_000);

  afterAll(async () => {
    for (const stop of stops) await stop();
    await t?.dispose();
  }, 30_000);

  const record = async (requestId: string) => {
    const res = await fetch(`${t.cp.url}/api/v1/requests/${requestId}`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(res.status).toBe(200);
    return RequestRecordSchema.parse(await res.json());
  };

  const expectContinued = (requestId: string) => {
    const mine = jobs.filter((j) => j.job.requestId === requestId);
    expect(mine).toHaveLength(2);
    const [first, second] = mine as [(typeof mine)[0], (typeof mine)[0]];
    expect(second.deviceId).not.toBe(first.deviceId);
    expect(first.job).toMatchObject({ attempt: 1, maxTokens: 10 });
    // the continuation gets the text the client has and only what is left of the budget
    expect(second.job).toMatchObject({ attempt: 2, maxTokens: 4, continuation: { content: 'Once upon a' } });
    return [first.deviceId, second.deviceId] as const;
  };

  it('non-streamed: the answer, usage and x-flotilla-device cover both devices; the record lists both attempts', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'user', content: 'Tell a story.' }], max_tokens: 10 })
      .withResponse();
    const requestId = response.headers.get('x-request-id') ?? '';
    const [a, b] = expectContinued(requestId);
    expect(data.choices[0]?.message.content).toBe('Once upon a time.');
    expect(data.usage).toMatchObject({ prompt_tokens: PROMPT_TOKENS, completion_tokens: 8 });
    expect(response.headers.get('x-flotilla-device')).toBe(`${a},${b}`);
    const row = await record(requestId);
    expect(row).toMatchObject({ outcome: 'success', deviceId: b, tokensIn: PROMPT_TOKENS, tokensOut: 8, retries: 1 });
    expect(row.attempts).toMatchObject([
      { attempt: 1, deviceId: a, end: 'offline', code: 'DEVICE_OFFLINE', tokens: 6, continuationChars: 0 },
      { attempt: 2, deviceId: b, end: 'ok', tokens: 2, continuationChars: 'Once upon a'.length },
    ]);
    for (const attempt of row.attempts) expect(attempt.endedAt).toBeGreaterThanOrEqual(attempt.startedAt);
  }, 30_000);

  it('streamed: the text once, usage = tokens delivered, and the record names both devices', async () => {
    const { data: stream, response } = await client.chat.completions
      .create({
        model: MODEL_2,
        messages: [{ role: 'user', content: 'Tell a story, streamed.' }],
        max_tokens: 10,
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('Once upon a time.');
    expect(usage).toMatchObject({ prompt_tokens: PROMPT_TOKENS, completion_tokens: 8 });
    const requestId = response.headers.get('x-request-id') ?? '';
    expect(response.headers.get('x-flotilla-device')).toBe(jobs.find((j) => j.job.requestId === requestId)?.deviceId); // the first device, at the start
    const [a, b] = expectContinued(requestId);
    const row = await record(requestId);
    expect(row.attempts.map((x) => [x.deviceId, x.end, x.tokens])).toEqual([
      [a, 'offline', 6],
      [b, 'ok', 2],
    ]);
  }, 30_000);
});
