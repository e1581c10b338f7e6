import type { ChatMessage } from '@flotilla/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEngine, tinyModel, type TinyModel } from '../../test/support/engine.js';
import { PacedEngine } from '../../test/support/paced-engine.js';
import { testLogger } from '../../test/support/silent-logger.js';
import { StuckDisposeEngine } from '../../test/support/stuck-dispose-engine.js';
import { InferenceFailure, type InferenceEngine } from './engine.js';
import type { LlamaEngine } from './llama-engine.js';
import { Runtime, type RuntimeLimits } from './runtime.js';

let engine: LlamaEngine;
let tiny: TinyModel;
const runtimes: Runtime[] = [];

beforeAll(async () => {
  [engine, tiny] = await Promise.all([createTestEngine(), tinyModel()]);
});
afterAll(async () => {
  for (const runtime of runtimes) await runtime.dispose();
  await engine.dispose();
});

function newRuntime(limits: Partial<RuntimeLimits> = {}, contextSize = 1024, parallel = 2, withEngine: InferenceEngine = engine): Runtime {
  const runtime = new Runtime({
    engine: withEngine,
    logger: testLogger(),
    memoryBudgetBytes: 1024 ** 3,
    maxParallelRequests: 2,
    maxQueuedRequests: 10,
    idleUnloadMs: 0,
    defaultContextSize: contextSize,
    defaultParallel: parallel,
    ...limits,
  });
  runtime.register({ name: 'tiny', sha256: tiny.sha256, path: tiny.path });
  runtimes.push(runtime);
  return runtime;
}

const hello: ChatMessage[] = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Say hello.' },
];

async function failureOf(promise: Promise<unknown>): Promise<InferenceFailure> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  if (!(error instanceof InferenceFailure)) throw new Error(`expected an InferenceFailure, got ${String(error)}`);
  return error;
}

describe('Runtime on the generated tiny model', () => {
  it('a model whose unload fails stays counted and is never loaded twice: the next load frees it first', async () => {
    const stuck = new StuckDisposeEngine(engine);
    const runtime = newRuntime({}, 512, 1, stuck);
    await runtime.load('tiny');
    const memoryBytes = runtime.loadedModels()[0]?.memoryBytes ?? 0;

    stuck.stuck = true;
    await expect(runtime.unload('tiny', { forget: false })).rejects.toThrow(/could not free/);
    expect(runtime.loadedModels()).toMatchObject([{ name: 'tiny', memoryBytes, unloadFailed: true }]);
    // A request needs the model again: the held copy must go first, so while it cannot, the load fails.
    const blocked = await runtime.submit({ requestId: 'held-1', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 4, temperature: 0 } }).then(
      () => 'served',
      (error: unknown) => (error instanceof Error ? error.message : String(error)),
    );
    expect(blocked).toMatch(/could not free/);
    expect(runtime.loadedModels()).toMatchObject([{ name: 'tiny', unloadFailed: true }]);

    stuck.stuck = false;
    const result = await runtime.submit({ requestId: 'held-2', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 4, temperature: 0 } });
    expect(result.completionTokens).toBeGreaterThan(0);
    expect(stuck.disposed).toBe(1);
    expect(runtime.loadedModels()).toHaveLength(1);
    expect(runtime.loadedModels()[0]?.unloadFailed).toBeUndefined();
  });

  it('loads on demand, streams text and reports usage', async () => {
    const runtime = newRuntime();
    const deltas: string[] = [];
    const result = await runtime.submit({
      requestId: 'r1',
      model: 'tiny',
      priority: 5,
      request: { messages: hello, maxTokens: 16, temperature: 0, seed: 1 },
      onTextDelta: (text) => deltas.push(text),
    });
    expect(result.finishReason).toBe('length');
    expect(result.completionTokens).toBe(16);
    expect(result.promptTokens).toBeGreaterThan(5);
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join('')).toBe(result.content);
    expect(result.ttftMs).toBeGreaterThanOrEqual(0);
    expect(runtime.loadedModels()).toMatchObject([{ name: 'tiny', contextSize: 1024, parallel: 2, activeRequests: 0 }]);
    const window = runtime.takeWindow();
    expect(window).toMatchObject({ completedRequests: 1, generatedTokens: 16 });
    expect(window.tokensPerSecond).toBeGreaterThan(0);
  });

  it('constrains output to a JSON schema (response_format)', async () => {
    const runtime = newRuntime();
    const schema = { type: 'object', properties: { answer: { enum: ['yes', 'no'] }, confidence: { type: 'number' } }, required: ['answer', 'confidence'] };
    const result = await runtime.submit({
      requestId: 'json',
      model: 'tiny',
      priority: 5,
      request: { messages: hello, maxTokens: 200, temperature: 0, responseFormat: { type: 'json_schema', json_schema: { name: 'verdict', schema } } },
    });
    expect(result.finishReason).toBe('stop');
    const parsed = JSON.parse(result.content ?? '') as { answer: string; confidence: number };
    expect(['yes', 'no']).toContain(parsed.answer);
    expect(typeof parsed.confidence).toBe('number');
  });

  it('answers with a tool call when tool_choice forces one, also among several tools', async () => {
    const runtime = newRuntime();
    const tools = [
      {
        type: 'function' as const,
        function: {
          name: 'get_weather',
          description: 'Weather for a city',
          parameters: { type: 'object', properties: { city: { enum: ['Berlin', 'Paris'] }, days: { type: 'integer' } }, required: ['city', 'days'] },
        },
      },
      { type: 'function' as const, function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { const: 'UTC' } }, required: ['zone'] } } },
    ];
    const forced = await runtime.submit({
      requestId: 'tool1',
      model: 'tiny',
      priority: 5,
      request: { messages: hello, tools, toolChoice: { type: 'function', function: { name: 'get_weather' } }, maxTokens: 100, temperature: 0 },
    });
    expect(forced.finishReason).toBe('tool_calls');
    expect(forced.content).toBeNull();
    expect(forced.toolCalls).toHaveLength(1);
    expect(forced.toolCalls[0]?.name).toBe('get_weather');
    expect(['Berlin', 'Paris']).toContain((JSON.parse(forced.toolCalls[0]?.arguments ?? '') as { city: string }).city);

    const required = await runtime.submit({
      requestId: 'tool2',
      model: 'tiny',
      priority: 5,
      request: { messages: hello, tools, toolChoice: 'required', maxTokens: 100, temperature: 0 },
    });
    expect(required.finishReason).toBe('tool_calls');
    expect(['get_weather', 'get_time']).toContain(required.toolCalls[0]?.name);

    const unknown = runtime.submit({
      requestId: 'tool3',
      model: 'tiny',
      priority: 5,
      request: { messages: hello, tools, toolChoice: { type: 'function', function: { name: 'nope' } } },
    });
    expect((await failureOf(unknown)).code).toBe('INVALID_REQUEST');
  });

  it('takes a conversation with earlier tool calls and results', async () => {
    const runtime = newRuntime();
    const result = await runtime.submit({
      requestId: 'history',
      model: 'tiny',
      priority: 5,
      request: {
        messages: [
          { role: 'user', content: 'weather?' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
          { role: 'tool', tool_call_id: 'c1', content: '{"temp":21}' },
        ],
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
        toolChoice: 'none',
        maxTokens: 8,
      },
    });
    expect(result.completionTokens).toBe(8);
  });

  it('cancels a running generation within a second and frees the slot', async () => {
    const runtime = newRuntime({ maxParallelRequests: 1 }, 4096);
    let cancelledAt = 0;
    const long = runtime.submit({
      requestId: 'long',
      model: 'tiny',
      priority: 5,
      request: { messages: hello, temperature: 0 },
      onTextDelta: () => {
        if (cancelledAt === 0) {
          cancelledAt = Date.now();
          runtime.cancel('long');
        }
      },
    });
    const next = runtime.submit({ requestId: 'next', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 4 } });
    const failure = await failureOf(long);
    expect(failure.code).toBe('CANCELLED');
    expect(Date.now() - cancelledAt).toBeLessThan(1000);
    expect((await next).completionTokens).toBe(4);
    expect(runtime.counts()).toEqual({ active: 0, queued: 0 });
  });

  it('serves `parallel` concurrent clients back to back without running out of sequences (none QUEUE_FULL)', async () => {
    const runtime = newRuntime({ maxParallelRequests: 4, maxQueuedRequests: 4 }, 512, 4);
    // Four closed-loop clients, five requests each: every new request arrives the moment the previous one answered,
    // which is when a sequence disposed without waiting was not yet back in node-llama-cpp's pool.
    const failures: string[] = [];
    // Sequences in use must be a subset of the slots in use, at every moment we can observe.
    const disagreements: string[] = [];
    const checkPool = (when: string): void => {
      const loaded = runtime.loadedModels()[0];
      if (loaded && loaded.freeSequences + loaded.activeRequests < loaded.parallel) disagreements.push(`${when}: ${loaded.freeSequences} free, ${loaded.activeRequests} active`);
    };
    await Promise.all(
      [0, 1, 2, 3].map(async (client) => {
        for (let round = 0; round < 5; round++) {
          const requestId = `c${client}-${round}`;
          const result = await runtime
            .submit({ requestId, model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 4 }, onTextDelta: () => checkPool(`${requestId} delta`) })
            .catch((error: unknown) => {
              failures.push(error instanceof InferenceFailure ? `${error.code}: ${error.message}` : String(error));
              return undefined;
            });
          checkPool(`${requestId} done`);
          if (result) expect(result.completionTokens).toBe(4);
        }
      }),
    );
    expect(failures).toEqual([]);
    expect(disagreements).toEqual([]);
    // A request leaves its slot only after its sequence is back: the runtime's count and llama's pool agree.
    expect(runtime.loadedModels()).toMatchObject([{ parallel: 4, activeRequests: 0, freeSequences: 4 }]);

    for (let round = 0; round < 3; round++) {
      const results = await Promise.all([0, 1, 2, 3].map((index) => runtime.submit({ requestId: `round${round}-${index}`, model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 2 } })));
      expect(results.map((result) => result.completionTokens)).toEqual([2, 2, 2, 2]);
      expect(runtime.loadedModels()[0]?.freeSequences).toBe(4);
    }
  });

  it('returns the sequence when a generation is cancelled or runs past its deadline', async () => {
    const runtime = newRuntime({ maxParallelRequests: 2 }, 4096);
    await runtime.load('tiny');
    const cancelled = runtime.submit({
      requestId: 'to-cancel',
      model: 'tiny',
      priority: 5,
      request: { messages: hello },
      onTextDelta: () => runtime.cancel('to-cancel'),
    });
    const expired = runtime.submit({ requestId: 'to-expire', model: 'tiny', priority: 5, deadline: Date.now() + 400, request: { messages: hello } });
    // Observed when each failure arrives: the cancelled job fails while the other still generates.
    const poolAt = (failure: InferenceFailure): [string, number, number] => {
      const loaded = runtime.loadedModels()[0];
      return [failure.code, loaded?.freeSequences ?? -1, loaded?.activeRequests ?? -1];
    };
    const [cancelFailure, deadlineFailure] = await Promise.all([failureOf(cancelled).then(poolAt), failureOf(expired).then(poolAt)]);
    expect(cancelFailure).toEqual(['CANCELLED', 1, 1]);
    expect(deadlineFailure).toEqual(['DEADLINE_EXCEEDED', 2, 0]);
    expect(runtime.loadedModels()).toMatchObject([{ activeRequests: 0, freeSequences: 2 }]);
    const next = await Promise.all(['n1', 'n2'].map((requestId) => runtime.submit({ requestId, model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 2 } })));
    expect(next.map((result) => result.finishReason)).toEqual(['length', 'length']);
    expect(runtime.loadedModels()[0]?.freeSequences).toBe(2);
  });

  it('bounds the queue, runs higher priority first and expires queued jobs at their deadline', async () => {
    const runtime = newRuntime({ maxParallelRequests: 1, maxQueuedRequests: 2 }, 4096);
    await runtime.load('tiny');
    const order: string[] = [];
    const blocker = runtime.submit({ requestId: 'blocker', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 400 } });
    const low = runtime.submit({ requestId: 'low', model: 'tiny', priority: 1, request: { messages: hello, maxTokens: 2 } }).then(() => order.push('low'));
    const high = runtime.submit({ requestId: 'high', model: 'tiny', priority: 9, request: { messages: hello, maxTokens: 2 } }).then(() => order.push('high'));
    expect((await failureOf(runtime.submit({ requestId: 'third', model: 'tiny', priority: 9, request: { messages: hello } }))).code).toBe('QUEUE_FULL');
    await Promise.all([blocker, low, high]);
    expect(order).toEqual(['high', 'low']);

    const blocker2 = runtime.submit({ requestId: 'blocker2', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 1500 } });
    const late = runtime.submit({ requestId: 'late', model: 'tiny', priority: 5, deadline: Date.now() + 50, request: { messages: hello } });
    expect((await failureOf(late)).code).toBe('DEADLINE_EXCEEDED');
    runtime.cancel('blocker2');
    expect((await failureOf(blocker2)).code).toBe('CANCELLED');
  });

  it('maps an oversized prompt to CONTEXT_LENGTH_EXCEEDED and unknown models to MODEL_NOT_FOUND', async () => {
    const runtime = newRuntime({}, 256);
    const long = 'word '.repeat(600);
    const failure = await failureOf(runtime.submit({ requestId: 'big', model: 'tiny', priority: 5, request: { messages: [{ role: 'user', content: long }] } }));
    expect(failure.code).toBe('CONTEXT_LENGTH_EXCEEDED');
    expect(failure.message).toMatch(/context holds 256/);
    expect((await failureOf(runtime.submit({ requestId: 'x', model: 'ghost', priority: 5, request: { messages: hello } }))).code).toBe('MODEL_NOT_FOUND');
  });

  it('refuses a model larger than the memory budget', async () => {
    const runtime = newRuntime({ memoryBudgetBytes: 1000 });
    const failure = await failureOf(runtime.submit({ requestId: 'm', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 1 } }));
    expect(failure.code).toBe('INSUFFICIENT_MEMORY');
  });

  it('unloads a model after the idle time and loads it again on the next request', async () => {
    let changes = 0;
    const runtime = new Runtime({
      engine,
      logger: testLogger(),
      memoryBudgetBytes: 1024 ** 3,
      maxParallelRequests: 1,
      maxQueuedRequests: 10,
      idleUnloadMs: 300,
      defaultContextSize: 512,
      defaultParallel: 1,
      onModelsChanged: () => changes++,
    });
    runtimes.push(runtime);
    runtime.register({ name: 'tiny', sha256: tiny.sha256, path: tiny.path });
    await runtime.submit({ requestId: 'a', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 2 } });
    expect(runtime.loadedModels()).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, 700));
    expect(runtime.loadedModels()).toHaveLength(0);
    expect(runtime.standby()).toEqual([{ name: 'tiny', sha256: tiny.sha256 }]);
    await runtime.submit({ requestId: 'b', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 2 } });
    expect(runtime.loadedModels()).toHaveLength(1);
    expect(runtime.standby()).toEqual([]);
    expect(changes).toBeGreaterThanOrEqual(3);
  });

  it('drains: refuses new jobs and cancels what outlives the grace period', async () => {
    const runtime = newRuntime({ maxParallelRequests: 1 }, 4096);
    await runtime.load('tiny');
    const running = failureOf(runtime.submit({ requestId: 'd1', model: 'tiny', priority: 5, request: { messages: hello } }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = Date.now();
    await runtime.drain(200);
    expect(Date.now() - started).toBeLessThan(1500);
    expect((await running).code).toBe('DEVICE_DRAINING');
    expect((await failureOf(runtime.submit({ requestId: 'd2', model: 'tiny', priority: 5, request: { messages: hello } }))).code).toBe('DEVICE_DRAINING');
  });

  it('bounds an unload: a generation that does not stop within stopTimeoutMs is failed and the model is freed anyway', async () => {
    // The real tiny model behind an engine whose generations take 30 s to stop after an abort (a large model in the
    // middle of a long evaluation step): unload must not wait for that.
    const slow = new PacedEngine(engine, 5, 30_000);
    const runtime = new Runtime({
      engine: slow,
      logger: testLogger(),
      memoryBudgetBytes: 1024 ** 3,
      maxParallelRequests: 1,
      maxQueuedRequests: 4,
      idleUnloadMs: 0,
      defaultContextSize: 1024,
      defaultParallel: 1,
      stopTimeoutMs: 500,
    });
    runtimes.push(runtime);
    runtime.register({ name: 'tiny', sha256: tiny.sha256, path: tiny.path });
    let deltas = 0;
    const job = failureOf(runtime.submit({ requestId: 'stuck', model: 'tiny', priority: 5, request: { messages: hello, maxTokens: 2000 }, onTextDelta: () => deltas++ }));
    const deadline = Date.now() + 20_000;
    while (deltas === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(deltas).toBeGreaterThan(0);

    const started = Date.now();
    const unloaded = await Promise.race([
      runtime.unload('tiny', { forget: true }).then(() => 'unloaded'),
      new Promise((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5000)),
    ]);
    expect(unloaded).toBe('unloaded');
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect((await job).code).toBe('MODEL_NOT_FOUND');
    expect(runtime.loadedModels()).toEqual([]);
    expect(runtime.counts()).toEqual({ active: 0, queued: 0 });
  });
});

describe('[P-3.6] continuation after a failover', () => {
  it('continues the answer with the text it would have had, counts the tokens behind every delta, and bills the prompt once', async () => {
    const runtime = newRuntime();
    const messages: ChatMessage[] = [{ role: 'user', content: 'Tell me a long story.' }];
    const deltas: { text: string; tokens: number }[] = [];
    const base = { model: 'tiny', priority: 5 } as const;
    const full = await runtime.submit({ ...base, requestId: 'whole', request: { messages, maxTokens: 60, temperature: 0, seed: 7 }, onTextDelta: (text, tokens) => deltas.push({ text, tokens }) });
    expect(deltas.map((d) => d.text).join('')).toBe(full.content);
    expect(deltas.reduce((n, d) => n + d.tokens, 0)).toBe(full.completionTokens);
    // The device died after k deltas: the next one continues after the text the client already has, on what is left
    // of the budget. These k end on a word boundary, where the next token carries a leading space.
    for (const k of [1, 5, 13]) {
      const continuation = deltas.slice(0, k).map((d) => d.text).join('');
      const delivered = deltas.slice(0, k).reduce((n, d) => n + d.tokens, 0);
      const rest = await runtime.submit({ ...base, requestId: `rest-${k}`, request: { messages, maxTokens: 60 - delivered, temperature: 0, seed: 7, continuation } });
      expect(continuation + (rest.content ?? ''), `continued after ${k} deltas`).toBe(full.content);
      expect(delivered + rest.completionTokens).toBe(full.completionTokens);
      expect(rest.promptTokens).toBe(full.promptTokens);
    }
  });

  it('continued after the token ids it was generated as, the answer is the uninterrupted one at every cut', async () => {
    const runtime = newRuntime();
    const messages: ChatMessage[] = [{ role: 'user', content: 'Tell a long story.' }];
    const deltas: { text: string; ids: readonly number[] }[] = [];
    const base = { model: 'tiny', priority: 5 } as const;
    const request = { messages, maxTokens: 120, temperature: 0, seed: 7 };
    const full = await runtime.submit({ ...base, requestId: 'whole-ids', request, onTextDelta: (text, tokens, ids) => deltas.push({ text, ids: ids ?? [] }) });
    const ids = deltas.flatMap((d) => d.ids);
    expect(ids).toHaveLength(full.completionTokens);
    expect(full.completionTokens).toBe(120);
    // Re-sent text diverged at most of these cuts: "▁is" re-tokenizes as "is", and a prefix evaluated as one batch
    // gets slightly different logits than one token at a time.
    for (let k = 1; k < deltas.length; k += 6) {
      const continuation = deltas.slice(0, k).map((d) => d.text).join('');
      const delivered = deltas.slice(0, k).flatMap((d) => d.ids);
      const rest = await runtime.submit({
        ...base,
        requestId: `ids-${k}`,
        request: { ...request, maxTokens: 120 - delivered.length, continuation, continuationTokens: { modelSha256: tiny.sha256, ids: delivered } },
      });
      expect(continuation + (rest.content ?? ''), `continued after ${k} tokens`).toBe(full.content);
      expect(delivered.length + rest.completionTokens).toBe(full.completionTokens);
      expect(rest.promptTokens).toBe(full.promptTokens);
    }
    // Ids of another file are never used: the text is (these would not even fit the vocabulary).
    const other = await runtime.submit({
      ...base,
      requestId: 'other-file',
      request: { ...request, maxTokens: 10, continuation: deltas[0]?.text ?? '', continuationTokens: { modelSha256: 'f'.repeat(64), ids: [10_000_000] } },
    });
    expect(other.completionTokens).toBeGreaterThan(0);
    expect(other.promptTokens).toBe(full.promptTokens);
  });
});
