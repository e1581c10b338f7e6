import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MessageOf } from '@flotilla/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { runCli } from '../src/cli/cli.js';
import { loadConfig } from '../src/config/config.js';
import { readCredentials } from '../src/credentials.js';
import { startBroker, type TestBroker } from './support/broker.js';
import { eventually, FakeControlPlane } from './support/control-plane.js';
import { tinyModel, type TinyModel } from './support/engine.js';
import { startFileServer, type FileServer } from './support/file-server.js';
import { desiredTiny, inferenceRequest } from './support/messages.js';
import { testLogger } from './support/silent-logger.js';

const DEVICE = 'dev-int-01';
const accounts = { [DEVICE]: 'device-secret', 'control-plane': 'cp-secret' };

let broker: TestBroker;
let files: FileServer;
let cp: FakeControlPlane;
let agent: Agent;
let tiny: TinyModel;
let dataDir: string;
let localBase: string;

const request = inferenceRequest;

function responsesFor(requestId: string): MessageOf<'inferenceResponse'>[] {
  return cp.all('inferenceResponse').filter((response) => response.requestId === requestId);
}

function finalFor(requestId: string): MessageOf<'inferenceResponse'> | undefined {
  return responsesFor(requestId).find((response) => response.type !== 'chunk');
}

beforeAll(async () => {
  tiny = await tinyModel();
  broker = await startBroker(accounts, { controlPlaneClientId: 'control-plane' });
  files = await startFileServer({ '/models/tiny.gguf': { body: readFileSync(tiny.path) } });
  cp = new FakeControlPlane(DEVICE, broker.url, accounts);
  await cp.connect('control-plane');
  dataDir = mkdtempSync(join(tmpdir(), 'flotilla-agent-int-'));
});

afterAll(async () => {
  await agent?.stop();
  await cp?.close();
  await files?.close();
  await broker?.close();
});

describe('device agent against a real aedes broker, HTTP model source and the tiny GGUF', () => {
  it('enrolls with a one-time token and stores the credentials with mode 0600', async () => {
    const server = await cp.startEnrollServer('tok-123', accounts[DEVICE]);
    const lines: string[] = [];
    const io = { out: (line: string) => lines.push(line), err: (line: string) => lines.push(line) };
    expect(await runCli(['enroll', '--server', server, '--token', 'wrong'], io, { FLOTILLA_AGENT_DATA_DIR: dataDir })).toBe(1);
    expect(lines.at(-1)).toMatch(/enrollment refused \(HTTP 401\): ENROLLMENT_TOKEN_INVALID bad token/);
    expect(await runCli(['enroll', '--token', 'tok-123'], io, { FLOTILLA_AGENT_DATA_DIR: dataDir })).toBe(2);
    expect(lines.at(-1)).toBe('enroll needs --server URL (or controlPlaneUrl in the config)');
    // Without --server the config's controlPlaneUrl is used.
    expect(await runCli(['enroll', '--token', 'tok-123'], io, { FLOTILLA_AGENT_DATA_DIR: dataDir, FLOTILLA_AGENT_CONTROL_PLANE_URL: server })).toBe(0);
    expect(statSync(join(dataDir, 'credentials.json')).mode & 0o777).toBe(0o600);
    expect(await readCredentials(dataDir)).toMatchObject({ deviceId: DEVICE, username: DEVICE, urls: [broker.url] });
  });

  it('says hello, goes online and converges on the desired state: download, verify, load, ready', async () => {
    const config = loadConfig({
      env: {
        FLOTILLA_AGENT_DATA_DIR: dataDir,
        FLOTILLA_AGENT_LOCAL_API_BIND: '127.0.0.1:0',
        FLOTILLA_AGENT_TELEMETRY_INTERVAL_SECONDS: '0.4',
        FLOTILLA_AGENT_CONTEXT_SIZE: '1024',
        FLOTILLA_AGENT_LABELS: 'site=test',
      },
    });
    config.mqtt.reconnectMinMs = 100;
    config.mqtt.reconnectMaxMs = 400;
    agent = await Agent.create({ config, credentials: await readCredentials(dataDir), logger: testLogger() });
    await agent.start();
    localBase = `http://127.0.0.1:${agent.localApiAddress?.port}`;

    const hello = await eventually(() => cp.all('hello')[0], 20_000, 'hello');
    expect(hello).toMatchObject({ agentVersion: '0.1.0', labels: { site: 'test' }, runtimes: [{ name: 'node-llama-cpp', gpuBackend: 'cpu' }] });
    expect(hello.hardware.cpu.cores).toBeGreaterThan(0);
    await eventually(() => cp.all('status').find((status) => status.state === 'online'), 10_000, 'online status');

    cp.publish('desired', desiredTiny(tiny, { url: files.url('/models/tiny.gguf'), contextSize: 1024, parallel: 2, maxParallelRequests: 2, maxQueueLength: 10 }), true);
    const ready = await eventually(
      () => cp.all('modelState').find((report) => report.models.some((model) => model.state === 'ready' && model.loaded)),
      30_000,
      'model ready',
    );
    expect(ready.desiredVersion).toBe(1);
    const states = cp.all('modelState').flatMap((report) => report.models.map((model) => model.state));
    expect(states).toContain('pending');
    expect(states).toContain('verifying');
  });

  it('streams an inference with chunk sequence numbers and a final result with usage', async () => {
    cp.publish('inferenceRequest', request({ requestId: 'stream-1', stream: true, maxTokens: 10 }));
    const result = await eventually(() => finalFor('stream-1'), 20_000, 'result');
    if (result.type !== 'result') throw new Error(`expected a result, got ${JSON.stringify(result)}`);
    const chunks = responsesFor('stream-1').filter((response) => response.type === 'chunk');
    expect(chunks.map((chunk) => chunk.seq)).toEqual([...Array(chunks.length).keys()]);
    expect(result.chunkCount).toBe(chunks.length);
    expect(chunks.map((chunk) => chunk.delta.content ?? '').join('')).toBe(result.message.content);
    expect(result.usage.completionTokens).toBe(10);
    expect(result.finishReason).toBe('length');
  });

  it('answers with a tool call and with JSON-schema constrained output', async () => {
    cp.publish(
      'inferenceRequest',
      request({
        requestId: 'tool-1',
        maxTokens: 60,
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { enum: ['Oslo', 'Rome'] } }, required: ['city'] } } }],
        toolChoice: { type: 'function', function: { name: 'get_weather' } },
      }),
    );
    cp.publish(
      'inferenceRequest',
      request({
        requestId: 'json-1',
        maxTokens: 60,
        responseFormat: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } } },
      }),
    );
    const tool = await eventually(() => finalFor('tool-1'), 20_000, 'tool result');
    if (tool.type !== 'result') throw new Error(JSON.stringify(tool));
    expect(tool.finishReason).toBe('tool_calls');
    expect(tool.message.tool_calls?.[0]?.function.name).toBe('get_weather');
    expect(['Oslo', 'Rome']).toContain((JSON.parse(tool.message.tool_calls?.[0]?.function.arguments ?? '{}') as { city: string }).city);
    const json = await eventually(() => finalFor('json-1'), 20_000, 'json result');
    if (json.type !== 'result') throw new Error(JSON.stringify(json));
    expect(typeof (JSON.parse(json.message.content ?? '') as { ok: unknown }).ok).toBe('boolean');
  });

  it('cancels a generation on request and answers CANCELLED', async () => {
    cp.publish('inferenceRequest', request({ requestId: 'cancel-1', stream: true, maxTokens: 900 }));
    await eventually(() => responsesFor('cancel-1').length > 0, 10_000, 'first chunk');
    const sentAt = Date.now();
    cp.publish('inferenceCancel', { v: 1, requestId: 'cancel-1', attempt: 1, reason: 'client-disconnected' });
    const final = await eventually(() => finalFor('cancel-1'), 5_000, 'cancel answer');
    expect(final).toMatchObject({ type: 'error', code: 'CANCELLED', retryable: false });
    expect(Date.now() - sentAt).toBeLessThan(1000);
  });

  it('reports malformed payloads and invalid desired states as events and keeps running', async () => {
    cp.publishRaw('inferenceRequest', '{not json');
    cp.publishRaw('desired', JSON.stringify({ v: 1, version: 0, models: 'nope' }));
    cp.publishRaw('command', JSON.stringify({ v: 7, kind: 'drain' }));
    const events = await eventually(() => {
      const found = cp.all('event');
      return found.length >= 3 ? found : undefined;
    }, 10_000, 'error events');
    const codes = events.map((event) => event.code);
    expect(codes).toContain('MALFORMED_JSON');
    expect(codes).toContain('INVALID_MESSAGE');
    expect(codes).toContain('UNSUPPORTED_VERSION');
    expect(events.find((event) => event.code === 'INVALID_MESSAGE')?.message).toMatch(/^desired/);
    cp.publish('inferenceRequest', request({ requestId: 'after-bad' }));
    expect((await eventually(() => finalFor('after-bad'), 10_000, 'answer after bad input')).type).toBe('result');
    expect(cp.invalid).toEqual([]);
  });

  // The bar is a one-minute outage; FLOTILLA_TEST_OUTAGE_MS shortens it for quick local runs only.
  const outageMs = Number(process.env.FLOTILLA_TEST_OUTAGE_MS ?? 60_000);
  it(`keeps serving locally and buffering telemetry while the broker is down (${outageMs / 1000} s), then delivers it in order, none twice`, { timeout: outageMs + 90_000 }, async () => {
    const before = cp.all('telemetry').length;
    expect(before).toBeGreaterThan(0);
    await broker.down();
    const seqsBefore = Math.max(...cp.all('telemetry').map((sample) => sample.seq));
    const outboxKinds = new Set(['telemetry', 'event', 'usage']);
    const lastBeforeCut = Math.max(...cp.received.filter((entry) => outboxKinds.has(entry.kind)).map((entry) => (entry.message as { seq: number }).seq));
    const downAt = Date.now();
    const local = await fetch(`${localBase}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'offline?' }], max_tokens: 4 }),
    });
    expect(local.status).toBe(200);
    const models = (await (await fetch(`${localBase}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((model) => model.id)).toEqual(['tiny']);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, outageMs - (Date.now() - downAt))));
    // Still answering locally at the end of the outage.
    const lateLocal = await fetch(`${localBase}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'still offline?' }], max_tokens: 4 }),
    });
    expect(lateLocal.status).toBe(200);
    const receivedWhileDown = cp.all('telemetry').length;
    await broker.up();

    // Samples taken during the outage (one per 0.4 s) arrive after the reconnect.
    const expectedWhileDown = Math.floor((outageMs / 400) * 0.8);
    await eventually(() => cp.all('telemetry').length >= receivedWhileDown + expectedWhileDown, 30_000, 'buffered telemetry');
    await eventually(() => cp.all('usage').some((usage) => usage.origin === 'local'), 10_000, 'local usage record');
    const arrivals = cp.received
      .filter((entry) => outboxKinds.has(entry.kind))
      .map((entry) => (entry.message as { seq: number }).seq);
    // [P-4.2] an entry is re-sent until its ack arrives, so the only repeats are entries sent before the cut whose
    // ack the cut swallowed; the control plane stores by seq, so what it keeps is every seq once, in order.
    const firsts = arrivals.filter((seq, index) => arrivals.indexOf(seq) === index);
    const repeats = arrivals.filter((seq, index) => arrivals.indexOf(seq) !== index);
    expect(firsts).toEqual(Array.from({ length: firsts.length }, (_, index) => index + 1));
    for (const seq of repeats) expect(seq).toBeLessThanOrEqual(lastBeforeCut);
    expect(repeats.length).toBeLessThanOrEqual(5);
    // A new connection brought a new hello and online status.
    await eventually(() => cp.all('hello').length >= 2, 10_000, 'second hello');
    // [P-3.1] on the new connection the hello came before any outbox entry.
    const secondHello = cp.received.findIndex((entry, index) => entry.kind === 'hello' && index > 0 && cp.received.slice(0, index).some((before) => before.kind === 'hello'));
    const firstAfterOutage = cp.received.findIndex((entry) => entry.kind === 'telemetry' && (entry.message as { seq: number }).seq > seqsBefore);
    expect(secondHello).toBeLessThan(firstAfterOutage);
  });

  it('unloads the model when the desired state drops it', async () => {
    cp.publish('desired', { v: 1, version: 2, ts: Date.now(), models: [], limits: { maxParallelRequests: 2, maxQueueLength: 10 } }, true);
    await eventually(() => cp.all('modelState').find((report) => report.desiredVersion === 2 && report.models.length === 0), 10_000, 'empty model state');
    await eventually(() => {
      const last = cp.all('telemetry').at(-1);
      return last && last.loadedModels.length === 0 ? last : undefined;
    }, 10_000, 'telemetry without loaded models');
    const models = (await (await fetch(`${localBase}/v1/models`)).json()) as { data: unknown[] };
    expect(models.data).toEqual([]);
  });
});
