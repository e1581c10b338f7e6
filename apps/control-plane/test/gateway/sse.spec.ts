import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { adminLogin, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { addCatalogModel, startCloudStandIn } from './support.js';

// The gateway's streamed answers go through the event stream's SSE writer: OpenAI's data-only frames, `data: [DONE]`,
// and heartbeats as `: heartbeat` comments while a slow upstream (here the cloud stand-in, pausing between pieces)
// keeps the client waiting; the official client skips the comments.
describeBackends('gateway SSE through the shared writer', (backend) => {
  let t: TestControlPlane;
  let cloud: Awaited<ReturnType<typeof startCloudStandIn>>;
  let gatewayKey: string;

  beforeAll(async () => {
    cloud = await startCloudStandIn({ pauseMs: 700 });
    t = await startTestControlPlane(backend, {
      FLOTILLA_GATEWAY_CLOUD_URL: cloud.url,
      FLOTILLA_GATEWAY_CLOUD_MODEL: 'gpt-stand-in',
      FLOTILLA_GATEWAY_STREAM_HEARTBEAT_S: '0.1',
    });
    ({ gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir));
    // A model nobody serves: every request for it goes to the cloud stand-in.
    await addCatalogModel(t.cp, 'cloud-only', 'large', { path: '/nonexistent/cloud-only.gguf', sha256: 'c'.repeat(64), sizeBytes: 1024 });
  }, 60_000);

  afterAll(async () => {
    await t?.dispose();
    await cloud?.close();
  });

  const ask = { model: 'cloud-only', messages: [{ role: 'user' as const, content: 'Say hello.' }], stream: true as const };

  it('sends data-only frames, heartbeat comments while the answer is slow, and data: [DONE] last', async () => {
    const res = await fetch(`${t.cp.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gatewayKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ...ask, stream_options: { include_usage: true } }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const body = await res.text();
    const frames = body.split('\n\n').slice(0, -1);
    expect(body.endsWith('\n\n')).toBe(true);
    // Heartbeats stand between the two pieces the stand-in sends 700 ms apart (one every 100 ms).
    expect(frames.filter((f) => f === ': heartbeat').length).toBeGreaterThanOrEqual(2);
    const data = frames.filter((f) => f !== ': heartbeat');
    expect(data.every((f) => f.startsWith('data: ') && !f.includes('\n'))).toBe(true);
    expect(data.at(-1)).toBe('data: [DONE]');
    const chunks = data.slice(0, -1).map((f) => JSON.parse(f.slice('data: '.length)) as OpenAI.ChatCompletionChunk);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe('cloud answer');
    expect(chunks.at(-1)?.usage?.total_tokens).toBe(5);
  });

  it('streams to the official client, which skips the heartbeat comments', async () => {
    const client = new OpenAI({ baseURL: `${t.cp.url}/v1`, apiKey: gatewayKey, maxRetries: 0 });
    let text = '';
    let finish: string | null | undefined;
    for await (const chunk of await client.chat.completions.create(ask)) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish ??= chunk.choices[0]?.finish_reason;
    }
    expect(text).toBe('cloud answer');
    expect(finish).toBe('stop');
  });
});
