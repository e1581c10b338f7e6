import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InferenceRequest, MessageOf } from '@flotilla/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { loadConfig } from '../src/config/config.js';
import { startBroker, type TestBroker } from './support/broker.js';
import { eventually, FakeControlPlane } from './support/control-plane.js';
import { createTestEngine, tinyModel, type TinyModel } from './support/engine.js';
import { PacedEngine, type TokenRecord } from './support/paced-engine.js';
import { desiredTiny, inferenceRequest } from './support/messages.js';
import { testLogger } from './support/silent-logger.js';

// Two agents on one real aedes broker with the tiny GGUF: one with the default coalescing (20 ms / 8 tokens) on the
// real engine, one whose real engine is paced to a token every PACE_MS (and stops STOP_MS after a cancel) with a 10 s
// flush interval, so that every buffered token stays buffered until something forces a flush.
const PACE_MS = 40;
/** The paced engine takes this long to stop after a cancel, as a large model finishing an evaluation step would. */
const STOP_MS = 400;
const accounts = { 'dev-stream-01': 'secret-1', 'dev-stream-02': 'secret-2', 'cp-1': 'cp-secret-1', 'cp-2': 'cp-secret-2' };

type Device = { agent: Agent; cp: FakeControlPlane; deviceId: string };
type Chunk = Extract<MessageOf<'inferenceResponse'>, { type: 'chunk' }>;

let broker: TestBroker;
let tiny: TinyModel;
let coalescing: Device;
let paced: Device & { engine: PacedEngine };

async function startDevice(deviceId: keyof typeof accounts, cpUser: keyof typeof accounts, env: Record<string, string>, engine?: PacedEngine): Promise<Device> {
  const cp = new FakeControlPlane(deviceId, broker.url, accounts);
  await cp.connect(cpUser);
  const config = loadConfig({
    env: { FLOTILLA_AGENT_DATA_DIR: mkdtempSync(join(tmpdir(), 'flotilla-stream-')), FLOTILLA_AGENT_LOCAL_API_ENABLED: 'false', FLOTILLA_AGENT_CONTEXT_SIZE: '1024', ...env },
  });
  const agent = await Agent.create({
    config,
    credentials: { deviceId, username: deviceId, password: accounts[deviceId], urls: [broker.url] },
    logger: testLogger(),
    ...(engine ? { engine } : {}),
  });
  await agent.start();
  await eventually(() => cp.all('status').find((status) => status.state === 'online'), 20_000, `${deviceId} online`);
  cp.publish('desired', desiredTiny(tiny, { contextSize: 1024, parallel: 1, maxParallelRequests: 1, maxQueueLength: 10 }), true);
  await eventually(() => cp.all('modelState').find((report) => report.models.some((model) => model.state === 'ready' && model.loaded)), 30_000, `${deviceId} model ready`);
  return { agent, cp, deviceId };
}

function request(overrides: Partial<InferenceRequest>): InferenceRequest {
  return inferenceRequest({ requestId: 'req', messages: [{ role: 'user', content: 'Tell me a long story' }], stream: true, ...overrides });
}

/** Everything the control plane received for a request, in arrival order, with arrival times. */
function trafficFor(cp: FakeControlPlane, requestId: string): { message: MessageOf<'inferenceResponse'>; at: number }[] {
  return cp.received
    .filter((entry) => entry.kind === 'inferenceResponse')
    .map((entry) => ({ message: entry.message as MessageOf<'inferenceResponse'>, at: entry.at }))
    .filter((entry) => entry.message.requestId === requestId);
}

function chunksOf(cp: FakeControlPlane, requestId: string): (Chunk & { at: number })[] {
  return trafficFor(cp, requestId).flatMap(({ message, at }) => (message.type === 'chunk' ? [{ ...message, at }] : []));
}

function terminalOf(cp: FakeControlPlane, requestId: string): MessageOf<'inferenceResponse'> | undefined {
  return trafficFor(cp, requestId).find(({ message }) => message.type !== 'chunk')?.message;
}

/** [P-3.7] seq 0, 1, 2... in arrival order; text and tool calls never share a chunk; nothing after the terminal message. */
function expectWellFormed(cp: FakeControlPlane, requestId: string): void {
  const traffic = trafficFor(cp, requestId);
  const chunks = chunksOf(cp, requestId);
  expect(chunks.map((chunk) => chunk.seq)).toEqual([...chunks.keys()]);
  for (const chunk of chunks) expect(chunk.delta.content !== undefined && chunk.delta.toolCalls !== undefined).toBe(false);
  const terminal = traffic.findIndex(({ message }) => message.type !== 'chunk');
  expect(terminal).toBe(traffic.length - 1);
}

beforeAll(async () => {
  tiny = await tinyModel();
  broker = await startBroker(accounts);
  coalescing = await startDevice('dev-stream-01', 'cp-1', {});
  const engine = new PacedEngine(await createTestEngine(), PACE_MS, STOP_MS);
  paced = {
    ...(await startDevice('dev-stream-02', 'cp-2', { FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: '10000', FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK: '1024' }, engine)),
    engine,
  };
});

afterAll(async () => {
  await coalescing?.agent.stop();
  await paced?.agent.stop();
  await coalescing?.cp.close();
  await paced?.cp.close();
  await broker?.close();
});

describe('[P-3.7] streamed chunks carry several tokens each', () => {
  it('a long answer: far fewer chunks than tokens, contiguous seqs, the chunks add up to the final content', async () => {
    const { cp } = coalescing;
    cp.publish('inferenceRequest', request({ requestId: 'long-1', maxTokens: 400 }));
    const result = await eventually(() => terminalOf(cp, 'long-1'), 30_000, 'result');
    if (result.type !== 'result') throw new Error(`expected a result, got ${JSON.stringify(result)}`);
    const chunks = chunksOf(cp, 'long-1');
    expectWellFormed(cp, 'long-1');
    expect(result.usage.completionTokens).toBe(400);
    expect(result.finishReason).toBe('length');
    expect(result.chunkCount).toBe(chunks.length);
    expect(chunks.map((chunk) => chunk.delta.content ?? '').join('')).toBe(result.message.content);
    // The first token alone, then up to 8 per chunk: about 51 chunks where a per-token stream sent about 400.
    expect(chunks.length).toBeGreaterThan(1);
    expect(chunks.length).toBeLessThan(result.usage.completionTokens / 4);
  });

  it('a forced tool call streams as one tool-call chunk, never merged with text', async () => {
    const { cp } = coalescing;
    cp.publish(
      'inferenceRequest',
      request({
        requestId: 'tool-1',
        maxTokens: 60,
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { enum: ['Oslo', 'Rome'] } }, required: ['city'] } } }],
        toolChoice: { type: 'function', function: { name: 'get_weather' } },
      }),
    );
    const result = await eventually(() => terminalOf(cp, 'tool-1'), 30_000, 'tool result');
    if (result.type !== 'result') throw new Error(JSON.stringify(result));
    expectWellFormed(cp, 'tool-1');
    const chunks = chunksOf(cp, 'tool-1');
    expect(chunks).toHaveLength(1);
    expect(chunks[0]?.delta.toolCalls?.[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather' } });
    expect(result).toMatchObject({ finishReason: 'tool_calls', chunkCount: 1 });
  });

  it('the first chunk is sent as soon as the first token exists, even with a 10 s flush interval', async () => {
    const { cp, engine } = paced;
    const before = engine.generations.length;
    cp.publish('inferenceRequest', request({ requestId: 'first-1', maxTokens: 6 }));
    const result = await eventually(() => terminalOf(cp, 'first-1'), 30_000, 'result');
    if (result.type !== 'result') throw new Error(JSON.stringify(result));
    const tokens = engine.generations[before] as TokenRecord[];
    expect(tokens.length).toBeGreaterThanOrEqual(2);
    const chunks = chunksOf(cp, 'first-1');
    expectWellFormed(cp, 'first-1');
    // The first chunk is exactly the first token and reached the control plane before the second token existed.
    expect(chunks[0]?.delta.content).toBe(tokens[0]?.text);
    expect(chunks[0]?.at).toBeLessThan(tokens[1]?.at ?? 0);
    // The rest waited for the terminal flush (interval 10 s, 1024 tokens): one more chunk, just before the result.
    expect(chunks).toHaveLength(2);
    expect(chunks[1]?.delta.content).toBe(tokens.slice(1).map((token) => token.text).join(''));
    expect(chunks.map((chunk) => chunk.delta.content ?? '').join('')).toBe(result.message.content);
    expect(result.chunkCount).toBe(2);
  });

  it('[P-3.8] cancel flushes the buffered text at once, then ends with CANCELLED and nothing after', async () => {
    const { cp, engine } = paced;
    const before = engine.generations.length;
    cp.publish('inferenceRequest', request({ requestId: 'cancel-1', maxTokens: 300 }));
    const tokens = await eventually(() => {
      const generation = engine.generations[before];
      return generation && generation.length >= 4 ? generation : undefined;
    }, 20_000, 'four tokens generated');
    // Only the first token has been sent: the others are buffered (10 s interval).
    expect(chunksOf(cp, 'cancel-1')).toHaveLength(1);
    const cancelledAt = performance.now();
    cp.publish('inferenceCancel', { v: 1, requestId: 'cancel-1', attempt: 1, reason: 'client-disconnected' });
    const final = await eventually(() => terminalOf(cp, 'cancel-1'), 5_000, 'cancel answer');
    expect(final).toMatchObject({ type: 'error', code: 'CANCELLED', retryable: false });
    expectWellFormed(cp, 'cancel-1');
    const chunks = chunksOf(cp, 'cancel-1');
    expect(chunks.length).toBeGreaterThanOrEqual(2);
    // The buffered text went out on the cancel itself, not only once generation had stopped (STOP_MS later).
    const errorAt = trafficFor(cp, 'cancel-1').at(-1)?.at ?? 0;
    expect(chunks[1]?.at).toBeLessThan(cancelledAt + STOP_MS / 2);
    expect(errorAt - cancelledAt).toBeGreaterThanOrEqual(STOP_MS - 50);
    expect(errorAt - cancelledAt).toBeLessThan(STOP_MS + 1000);
    // Every token handed to the agent reached the control plane, in order, before the error.
    expect(chunks.map((chunk) => chunk.delta.content ?? '').join('')).toBe(tokens.map((token) => token.text).join(''));
    await new Promise((resolve) => setTimeout(resolve, 3 * PACE_MS));
    expect(trafficFor(cp, 'cancel-1').at(-1)?.message.type).toBe('error');
  });

  it('[P-3.6] a failover attempt of the same request on this device runs while the old attempt unwinds; each answer names its attempt', async () => {
    const { cp, engine } = paced;
    const before = engine.generations.length;
    cp.publish('inferenceRequest', request({ requestId: 'again-1', attempt: 1, maxTokens: 300 }));
    await eventually(() => (engine.generations[before]?.length ?? 0) >= 2, 20_000, 'attempt 1 generating');
    // The gateway gave up on attempt 1 and (after tier escalation) sends attempt 2 to the same device at once.
    cp.publish('inferenceCancel', { v: 1, requestId: 'again-1', attempt: 1, reason: 'failover' });
    cp.publish('inferenceRequest', request({ requestId: 'again-1', attempt: 2, maxTokens: 4 }));
    const ofAttempt = (attempt: number) => trafficFor(cp, 'again-1').filter(({ message }) => message.attempt === attempt);
    const second = await eventually(() => ofAttempt(2).find(({ message }) => message.type !== 'chunk'), 20_000, 'the end of attempt 2');
    expect(second.message).toMatchObject({ type: 'result', attempt: 2, finishReason: 'length' });
    const first = ofAttempt(1).find(({ message }) => message.type !== 'chunk');
    expect(first?.message).toMatchObject({ type: 'error', attempt: 1, code: 'CANCELLED' });
    // Every response carries its attempt; attempt 2's chunks count from seq 0 again.
    expect(trafficFor(cp, 'again-1').every(({ message }) => message.attempt === 1 || message.attempt === 2)).toBe(true);
    expect(ofAttempt(2).flatMap(({ message }) => (message.type === 'chunk' ? [message.seq] : []))[0]).toBe(0);
  });
});
