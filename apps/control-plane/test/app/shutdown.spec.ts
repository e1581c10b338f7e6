import { request as httpRequest, type IncomingMessage } from 'node:http';
import { PROTOCOL_VERSION, decode, encode, topics } from '@flotilla/protocol';
import { makeModelState, makeModelStatus, makeStatus } from '@flotilla/protocol/testing';
import { expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { addCatalogModel } from '../gateway/support.js';
import { openSse } from '../observability/sse-client.js';
import { adminLogin, startTestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';

/** A streaming chat completion over its own socket; resolves with the response once its first bytes arrived. */
function openCompletionStream(url: string, key: string, model: string): Promise<{ res: IncomingMessage; first: string; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/v1/chat/completions`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const ended = new Promise<void>((done) => {
        res.on('close', done);
        res.on('error', done);
      });
      res.once('data', (chunk: Buffer) => resolve({ res, first: chunk.toString('utf8'), ended }));
    });
    req.end(JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hello' }] }));
  });
}

describeBackends('shutdown', (backend) => {
  it('close() finishes within a few seconds while an event stream, gateway requests (streaming and not) and an MQTT WebSocket are open', async () => {
    const t = await startTestControlPlane(backend);
    let closed = false;
    try {
      const { adminToken, gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir);
      // A device that starts answering and then never finishes: the gateway stream stays open until its deadline (30 s).
      const deviceId = 'stuck-1';
      const sha256 = 'a'.repeat(64);
      await addCatalogModel(t.cp, 'stuck-s', 'small', { path: '/nonexistent/stuck.gguf', sha256, sizeBytes: 1000 });
      const jobs: string[] = [];
      await t.cp.broker.subscribe(topics.inferenceRequest(deviceId), (m) => {
        const job = decode('inferenceRequest', m.payload);
        if (!job.ok) return;
        jobs.push(job.value.requestId);
        const chunk = encode('inferenceResponse', { v: PROTOCOL_VERSION, type: 'chunk', requestId: job.value.requestId, attempt: job.value.attempt, seq: 0, delta: { content: 'Hel' } });
        t.cp.broker.publish(topics.inferenceResponse(deviceId), chunk, { qos: 1 }).catch((error: unknown) => console.error('scripted device: chunk not published', error));
      });
      const state = makeModelState({ ts: Date.now(), models: [makeModelStatus('ready', { name: 'stuck-s', sha256, since: Date.now() })] });
      await t.cp.broker.publish(topics.modelState(deviceId), encode('modelState', state), { qos: 1, retain: true });
      await t.cp.broker.publish(topics.status(deviceId), encode('status', makeStatus({ state: 'online', sessionId: 'sess-stuck', ts: Date.now() })), { qos: 1, retain: true });

      const events = await openSse(`${t.cp.url}/api/v1/events/stream`, { authorization: `Bearer ${adminToken}` });
      expect(events.status).toBe(200);
      const completion = await pollUntil(
        async () => {
          const opened = await openCompletionStream(t.cp.url, gatewayKey, 'stuck-s');
          if (opened.res.statusCode === 200) return opened;
          opened.res.destroy();
          return undefined;
        },
        { timeoutMs: 5000, intervalMs: 50 },
      );
      expect(completion.first).toContain('chat.completion.chunk');
      // a non-streaming request to the same stuck device, still waiting for its answer
      const waiting = fetch(`${t.cp.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${gatewayKey}` },
        body: JSON.stringify({ model: 'stuck-s', messages: [{ role: 'user', content: 'hello' }] }),
      }).then(
        (res) => res.status,
        () => 'reset',
      );
      await pollUntil(() => jobs.length === 2, { timeoutMs: 5000, intervalMs: 20 });
      // and an upgraded MQTT-over-WebSocket connection on the same HTTP server that has not sent CONNECT yet
      const ws = new WebSocket(`ws://127.0.0.1:${t.cp.httpPort}/mqtt`, 'mqtt');
      await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
      const wsClosed = new Promise((resolve) => ws.once('close', resolve));

      const started = Date.now();
      await t.cp.close();
      closed = true;
      expect(Date.now() - started).toBeLessThan(4000);
      // both clients saw their streams end
      await events.ended;
      await completion.ended;
      expect(await waiting).not.toBe(200);
      await wsClosed;
    } finally {
      if (!closed) await t.cp.close();
      await t.isolated.dispose();
    }
  }, 20_000);
});
