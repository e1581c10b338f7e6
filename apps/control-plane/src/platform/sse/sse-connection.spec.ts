import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MAX_BUFFERED_BYTES, SseConnection } from './sse-connection.js';

function collect(stream: PassThrough): () => string {
  let text = '';
  stream.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return () => text;
}

describe('SseConnection', () => {
  it('frames events with id, event and one JSON data line, so payloads cannot inject fields', async () => {
    const out = new PassThrough();
    const text = collect(out);
    const sse = new SseConnection(out, 0);
    sse.retry(3000);
    sse.send({ id: '1.1', event: 'device.status', data: { message: 'line\n\nid: 666\ndata: x' } });
    sse.send({ event: 'evil\nid: 9', data: 1 });
    await new Promise((r) => setImmediate(r));
    expect(text()).toBe(
      'retry: 3000\n\n' + 'id: 1.1\nevent: device.status\ndata: {"message":"line\\n\\nid: 666\\ndata: x"}\n\n' + 'event: evil id: 9\ndata: 1\n\n',
    );
    sse.close();
  });

  it('sends heartbeats on its interval and stops them when closed, once', async () => {
    const out = new PassThrough();
    const text = collect(out);
    const sse = new SseConnection(out, 20);
    let closed = 0;
    sse.onClose(() => closed++);
    await new Promise((r) => setTimeout(r, 70));
    const beats = text().match(/event: heartbeat\ndata: \{"at":"[^"]+"\}\n\n/g) ?? [];
    expect(beats.length).toBeGreaterThanOrEqual(2);
    sse.close();
    sse.close();
    expect(closed).toBe(1);
    expect(out.writableEnded).toBe(true);
    const after = text();
    await new Promise((r) => setTimeout(r, 50));
    expect(text()).toBe(after);
    sse.send({ data: 'late' });
    expect(text()).toBe(after);
  });

  it('cuts a reader that stopped reading', () => {
    const out = new PassThrough({ highWaterMark: 16 });
    const sse = new SseConnection(out, 0);
    const big = 'x'.repeat(64 * 1024);
    for (let i = 0; i * big.length <= MAX_BUFFERED_BYTES + big.length && !sse.isClosed; i++) sse.send({ data: big });
    expect(sse.isClosed).toBe(true);
  });

  it("frames OpenAI's data-only stream: comment heartbeats, JSON data lines, data: [DONE]", async () => {
    const out = new PassThrough();
    const text = collect(out);
    const sse = new SseConnection(out, 20, 'comment');
    sse.send({ data: { choices: [{ delta: { content: 'hi\n' } }] } });
    await new Promise((r) => setTimeout(r, 70));
    sse.sendLiteral('[DONE]');
    sse.close();
    await new Promise((r) => setImmediate(r));
    const frames = text().split('\n\n');
    expect(frames[0]).toBe('data: {"choices":[{"delta":{"content":"hi\\n"}}]}');
    expect(frames.slice(1, -2).length).toBeGreaterThanOrEqual(2);
    expect(new Set(frames.slice(1, -2))).toEqual(new Set([': heartbeat']));
    expect(frames.slice(-2)).toEqual(['data: [DONE]', '']);
  });

  it('stops writing to a response someone else destroyed', () => {
    const out = new PassThrough();
    const sse = new SseConnection(out, 0);
    let closed = 0;
    sse.onClose(() => closed++);
    out.destroy();
    sse.send({ data: 'after' });
    expect(sse.isClosed).toBe(true);
    expect(closed).toBe(1);
  });
});
