import { Aedes, type PublishPacket } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { indexRetainedMessages } from './retained-index.js';

interface RetainedReader {
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<{ topic: string; payload: Buffer }>;
}

const publish = (broker: Aedes, topic: string, payload: string) =>
  new Promise<void>((done, fail) => {
    const packet: PublishPacket = { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: true, dup: false };
    broker.publish(packet, (error) => (error ? fail(error) : done()));
  });

const read = async (broker: Aedes, patterns: string[]) => {
  const topics: string[] = [];
  for await (const packet of (broker as unknown as { persistence: RetainedReader }).persistence.createRetainedStreamCombi(patterns)) topics.push(packet.topic);
  return topics.sort();
};

describe('retained messages indexed by topic', () => {
  let broker: Aedes | undefined;
  afterEach(async () => {
    await new Promise<void>((done) => (broker ? broker.close(() => done()) : done()));
    broker = undefined;
  });

  it('answers exact and wildcard subscriptions as the library does, cleared topics included', async () => {
    const b = await Aedes.createBroker();
    broker = b;
    expect(indexRetainedMessages((b as unknown as { persistence: unknown }).persistence)).toBe(true);
    for (const id of ['a', 'b', 'c']) {
      await publish(b, `flotilla/devices/${id}/status`, `{"id":"${id}"}`);
      await publish(b, `flotilla/devices/${id}/desired`, '{}');
    }
    await publish(b, 'flotilla/devices/b/status', ''); // cleared
    expect(await read(b, ['flotilla/devices/a/status'])).toEqual(['flotilla/devices/a/status']);
    expect(await read(b, ['flotilla/devices/b/status'])).toEqual([]);
    expect(await read(b, ['flotilla/devices/zz/status'])).toEqual([]);
    expect(await read(b, ['flotilla/devices/+/status'])).toEqual(['flotilla/devices/a/status', 'flotilla/devices/c/status']);
    expect(await read(b, ['flotilla/devices/c/#', 'flotilla/devices/a/desired'])).toEqual([
      'flotilla/devices/a/desired',
      'flotilla/devices/c/desired',
      'flotilla/devices/c/status',
    ]);
  });

  // Regression (issue 11): a fleet joining subscribed in O(fleet) each. 1,000 exact subscriptions against 20,000
  // retained messages were 20 million topic matches (tens of seconds here); indexed, they take milliseconds. The
  // bound is generous for a loaded box and still far below the scan.
  it('answers an exact subscription without scanning every retained message', { timeout: 120_000 }, async () => {
    const b = await Aedes.createBroker();
    broker = b;
    indexRetainedMessages((b as unknown as { persistence: unknown }).persistence);
    for (let i = 0; i < 20_000; i++) await publish(b, `flotilla/devices/d${i}/status`, '{"status":"online"}');
    const started = performance.now();
    let found = 0;
    for (let i = 0; i < 1000; i++) found += (await read(b, [`flotilla/devices/d${i * 20}/desired`, `flotilla/devices/d${i * 20}/status`])).length;
    const elapsed = performance.now() - started;
    expect(found).toBe(1000);
    expect(elapsed).toBeLessThan(3000);
  });
});
