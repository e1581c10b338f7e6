import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEngine, tinyModel } from '../../test/support/engine.js';
import { testLogger } from '../../test/support/silent-logger.js';
import { InferenceService, type UsageFields } from '../inference/service.js';
import type { LlamaEngine } from '../runtime/llama-engine.js';
import { Runtime } from '../runtime/runtime.js';
import { LocalApi } from './local-api.js';

let engine: LlamaEngine;
let runtime: Runtime;
let api: LocalApi;
let base: string;
const usage: UsageFields[] = [];

beforeAll(async () => {
  const [created, tiny] = await Promise.all([createTestEngine(), tinyModel()]);
  engine = created;
  runtime = new Runtime({
    engine,
    logger: testLogger(),
    memoryBudgetBytes: 1024 ** 3,
    maxParallelRequests: 4,
    maxQueuedRequests: 8,
    idleUnloadMs: 0,
    defaultContextSize: 1024,
    defaultParallel: 4,
  });
  runtime.register({ name: 'tiny', sha256: tiny.sha256, path: tiny.path });
  api = new LocalApi({ host: '127.0.0.1', port: 0, service: new InferenceService(runtime, (record) => usage.push(record)), logger: testLogger() });
  const address = await api.start();
  base = `http://127.0.0.1:${address.port}`;
});
afterAll(async () => {
  await api.stop();
  await runtime.dispose();
  await engine.dispose();
});

const messages = [{ role: 'user', content: 'Hi' }];

function post(body: unknown): Promise<Response> {
  return fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

describe('local OpenAI-compatible API', () => {
  it('lists the models', async () => {
    const response = await fetch(`${base}/v1/models`);
    expect(await response.json()).toEqual({ object: 'list', data: [{ id: 'tiny', object: 'model', created: 0, owned_by: 'flotilla-device' }] });
  });

  it('answers a chat completion with usage', async () => {
    const response = await post({ model: 'tiny', messages, max_tokens: 5, temperature: 0 });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { choices: { message: { role: string; content: string }; finish_reason: string }[]; usage: Record<string, number> };
    expect(body.choices[0]?.message.role).toBe('assistant');
    expect(body.choices[0]?.finish_reason).toBe('length');
    expect(body.usage['completion_tokens']).toBe(5);
    expect(usage.at(-1)).toMatchObject({ origin: 'local', outcome: 'success', completionTokens: 5 });
  });

  it('streams server-sent events ending with [DONE]', async () => {
    const response = await post({ model: 'tiny', messages, max_tokens: 6, stream: true });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const events = (await response.text())
      .split('\n\n')
      .filter((block) => block.startsWith('data: '))
      .map((block) => block.slice(6));
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event) as { object: string; choices: { delta: { content?: string }; finish_reason: string | null }[] });
    expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks.filter((chunk) => chunk.choices[0]?.delta.content).length).toBeGreaterThan(1);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('length');
  });

  it('returns tool calls and schema-constrained JSON', async () => {
    const tools = [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: { id: { enum: ['a', 'b'] } }, required: ['id'] } } }];
    const toolResponse = (await (await post({ model: 'tiny', messages, tools, tool_choice: 'required', max_tokens: 50 })).json()) as {
      choices: { message: { tool_calls: { function: { name: string; arguments: string } }[] }; finish_reason: string }[];
    };
    expect(toolResponse.choices[0]?.finish_reason).toBe('tool_calls');
    expect(toolResponse.choices[0]?.message.tool_calls[0]?.function.name).toBe('lookup');

    const schema = { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] };
    const jsonResponse = (await (await post({ model: 'tiny', messages, response_format: { type: 'json_schema', json_schema: { name: 's', schema } }, max_tokens: 50 })).json()) as {
      choices: { message: { content: string } }[];
    };
    expect(typeof (JSON.parse(jsonResponse.choices[0]?.message.content ?? '') as { ok: unknown }).ok).toBe('boolean');
  });

  it('serves `parallel` closed-loop clients, streamed or not, without QUEUE_FULL', async () => {
    // The gateway benchmark's shape: four clients, each sending its next request as soon as the last one answered.
    const outcomes = await Promise.all(
      [0, 1, 2, 3].map(async (client) => {
        const seen: (number | string)[] = [];
        for (let round = 0; round < 5; round++) {
          const response = await post({ model: 'tiny', messages, max_tokens: 4, stream: (client + round) % 2 === 1 });
          const text = await response.text();
          seen.push(response.status === 200 && !text.includes('"error"') ? 200 : `${response.status} ${text}`);
        }
        return seen;
      }),
    );
    expect(outcomes.flat()).toEqual(Array.from({ length: 20 }, () => 200));
    expect(runtime.loadedModels()).toMatchObject([{ parallel: 4, activeRequests: 0, freeSequences: 4 }]);
  });

  it('a client that disconnects mid-stream cancels its job and frees the sequence', async () => {
    const controller = new AbortController();
    const response = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', messages, stream: true }),
      signal: controller.signal,
    });
    const reader = response.body?.getReader();
    expect((await reader?.read())?.done).toBe(false);
    controller.abort();
    const until = Date.now() + 2000;
    while (runtime.counts().active > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(runtime.counts()).toEqual({ active: 0, queued: 0 });
    expect(runtime.loadedModels()).toMatchObject([{ activeRequests: 0, freeSequences: 4 }]);
    expect(usage.at(-1)).toMatchObject({ origin: 'local', outcome: 'cancelled', errorCode: 'CANCELLED' });
  });

  it('answers bad input with OpenAI-shaped errors and protocol codes', async () => {
    const unknown = await post({ model: 'ghost', messages });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'MODEL_NOT_FOUND' } });
    const invalid = await post({ model: 'tiny', messages: [{ role: 'robot', content: 'x' }] });
    expect(invalid.status).toBe(400);
    expect(await invalid.json()).toMatchObject({ error: { code: 'INVALID_REQUEST', message: expect.stringMatching(/^messages\.0\.role/) } });
    const malformed = await fetch(`${base}/v1/chat/completions`, { method: 'POST', body: '{nope' });
    expect(await malformed.json()).toMatchObject({ error: { code: 'MALFORMED_JSON' } });
    expect((await fetch(`${base}/v1/nothing`)).status).toBe(404);
  });
});
