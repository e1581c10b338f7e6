import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RequestRecordSchema } from '@flotilla/protocol';
import { ensureModel } from '@flotilla/tools/models';
import { startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { adminLogin, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { addCatalogModel, publishDesired } from './support.js';

const MODEL = 'tiny-cont';
const MAX_TOKENS = 120;
/** agents hand out one token per this many ms (test seam): the kill lands mid-answer, between two chunks */
const TOKEN_GAP_MS = 25;

// [P-3.6 continuation] Issue 8, point 5: the device of a streaming answer is SIGKILLed after exactly N chunks; the
// client's text is the uninterrupted answer (3 real agents, same GGUF, the official `openai` client, temperature 0,
// a fixed seed), usage is the tokens delivered, and the request record names both devices.
describeBackends('continuation after a SIGKILLed device (issue 8, point 5)', (backend) => {
  let t: TestControlPlane;
  let agents: SimAgent[] = [];
  let base: string;
  let client: OpenAI;
  let adminToken: string;

  beforeAll(async () => {
    t = await startTestControlPlane(backend, { FLOTILLA_GATEWAY_TIMEOUT_MS: '60000', FLOTILLA_GATEWAY_FIRST_TOKEN_TIMEOUT_MS: '15000' });
    let gatewayKey: string;
    ({ adminToken, gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir));
    client = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: gatewayKey, maxRetries: 0 });
    const model = await ensureModel('tiny', { seed: 11 });
    await addCatalogModel(t.cp, MODEL, 'small', model);
    base = await mkdtemp(join(tmpdir(), 'flotilla-cont-'));
    agents = await startAgents({
      controlPlaneUrl: t.cp.url,
      adminToken,
      count: 3,
      baseDir: base,
      // one token per chunk, paced like a slow device
      env: { FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: '0', FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK: '1', FLOTILLA_AGENT_TEST_TOKEN_GAP_MS: String(TOKEN_GAP_MS) },
    });
    await pollUntil(async () => t.cp.broker.connectedClients >= 3, { timeoutMs: 30_000 });
    for (const agent of agents) await publishDesired(t.cp, agent.deviceId, [{ name: MODEL, file: model }]);
    await pollUntil(
      async () => {
        const res = await fetch(`${t.cp.url}/api/v1/gateway/stats`, { headers: { authorization: `Bearer ${adminToken}` } });
        const s = (await res.json()) as { replicas: Record<string, string[]> };
        return (s.replicas[MODEL]?.length ?? 0) === 3;
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    );
  }, 120_000);

  afterAll(async () => {
    await stopAgents(agents).catch(() => undefined);
    await t?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  }, 60_000);

  const ask = { model: MODEL, messages: [{ role: 'user' as const, content: 'Tell a long story.' }], max_tokens: MAX_TOKENS, temperature: 0, seed: 7 };

  /** Streams the request; after `killAfter` content chunks, SIGKILLs the answering device before reading on. */
  const streamed = async (killAfter?: number) => {
    const { data: stream, response } = await client.chat.completions.create({ ...ask, stream: true, stream_options: { include_usage: true } }).withResponse();
    const firstDevice = response.headers.get('x-flotilla-device') ?? '';
    const requestId = response.headers.get('x-request-id') ?? '';
    let text = '';
    let chunks = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    let killed: SimAgent | undefined;
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta.content ?? '';
      if (piece !== '') {
        text += piece;
        chunks++;
      }
      if (chunk.usage) usage = chunk.usage;
      if (killAfter !== undefined && chunks === killAfter && !killed) {
        killed = agents.find((a) => a.deviceId === firstDevice);
        if (!killed) throw new Error(`no agent ${firstDevice}`);
        await killed.kill(); // the stream is not read on until the device is dead
      }
    }
    return { text, chunks, usage, requestId, firstDevice, killed };
  };

  const record = async (requestId: string) => {
    const res = await fetch(`${t.cp.url}/api/v1/requests/${requestId}`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(res.status).toBe(200);
    return RequestRecordSchema.parse(await res.json());
  };

  it('the client gets the uninterrupted answer, usage = tokens delivered, and the record lists both devices, for early and late kills', { timeout: 180_000 }, async () => {
    const reference = await streamed();
    expect(reference.usage?.completion_tokens).toBe(MAX_TOKENS);
    expect(reference.chunks).toBe(MAX_TOKENS); // one token per chunk
    expect((await record(reference.requestId)).attempts).toHaveLength(1);

    for (const n of [7, 64]) {
      const run = await streamed(n);
      expect(run.killed, `N=${n}: a device was killed`).toBeDefined();
      expect(run.text, `N=${n}: no repeated or missing text`).toBe(reference.text);
      const completion = run.usage?.completion_tokens ?? -1;
      expect(completion).toBeLessThanOrEqual(MAX_TOKENS);
      expect(completion, `N=${n}: usage = tokens delivered (one per chunk)`).toBe(run.chunks);
      const row = await record(run.requestId);
      expect(row.attempts, `N=${n}: both attempts`).toHaveLength(2);
      const [first, second] = row.attempts as [(typeof row.attempts)[0], (typeof row.attempts)[0]];
      expect(first).toMatchObject({ attempt: 1, deviceId: run.firstDevice, end: 'offline', continuationChars: 0 });
      expect(second).toMatchObject({ attempt: 2, end: 'ok' });
      expect(second.deviceId).not.toBe(run.firstDevice);
      expect(second.continuationChars).toBeGreaterThan(0);
      // the kill landed mid-answer: the dead device delivered at least N tokens and not the whole answer
      expect(first.tokens).toBeGreaterThanOrEqual(n);
      expect(first.tokens).toBeLessThan(MAX_TOKENS);
      expect(first.tokens + second.tokens).toBe(completion);
      expect(row.tokensOut).toBe(completion);
    }
  });
});
