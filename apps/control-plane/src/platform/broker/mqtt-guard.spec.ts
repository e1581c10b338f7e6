import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { MqttFrameScanner } from './mqtt-guard.js';
import { WorkQueue } from './work-queue.js';

const limits = { maxPacketBytes: 1024, maxUnauthenticatedBytes: 256 };
const connect = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'dev-a', keepalive: 30 });
const publish = (bytes: number) => mqttPacket.generate({ cmd: 'publish', topic: 'own/dev-a/t', payload: Buffer.alloc(bytes), qos: 1, messageId: 7, dup: false, retain: false });
const ping = mqttPacket.generate({ cmd: 'pingreq' });

/** Feeds `bytes` one byte at a time, as the worst split a socket can deliver. */
function feedBytewise(scanner: MqttFrameScanner, bytes: Buffer) {
  for (let i = 0; i < bytes.length; i++) {
    const violation = scanner.feed(bytes.subarray(i, i + 1));
    if (violation) return violation;
  }
  return undefined;
}

describe('MqttFrameScanner', () => {
  it('follows real packets split anywhere and packed together, up to the authenticated cap', () => {
    const scanner = new MqttFrameScanner(limits);
    expect(feedBytewise(scanner, connect)).toBeUndefined();
    scanner.markAuthenticated();
    // Multi-byte remaining lengths (>127) split byte by byte, then several packets in one chunk, a 0-length PINGREQ among them.
    expect(feedBytewise(scanner, publish(900))).toBeUndefined();
    expect(scanner.feed(Buffer.concat([ping, publish(10), ping, publish(1000)]))).toBeUndefined();
    expect(scanner.feed(publish(1010))).toEqual({ reason: 'packet-too-large', declared: 1010 + 2 + 11 + 2 });
  });

  it('cuts at the header: a first packet that is not CONNECT, a big CONNECT, a 5-byte length, too much before authentication', () => {
    expect(new MqttFrameScanner(limits).feed(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x64]))).toEqual({ reason: 'first-packet-not-connect', declared: 200 * 1024 * 1024 });
    expect(new MqttFrameScanner(limits).feed(Buffer.from([0x10, 0x80, 0x08]))).toEqual({ reason: 'too-much-before-authentication', declared: 1024 });
    expect(feedBytewise(new MqttFrameScanner({ ...limits, maxUnauthenticatedBytes: 1e9 }), Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff]))).toEqual({ reason: 'malformed-length' });
    const chatty = new MqttFrameScanner(limits);
    expect(chatty.feed(connect)).toBeUndefined();
    expect(chatty.feed(Buffer.concat(Array.from({ length: 40 }, () => ping)))).toBeUndefined();
    expect(chatty.feed(Buffer.concat(Array.from({ length: 200 }, () => ping)))).toEqual({ reason: 'too-much-before-authentication' });
  });

  it('says when the whole CONNECT has arrived (the per-address slot is then freed), not at its first bytes', () => {
    const scanner = new MqttFrameScanner(limits);
    for (let i = 0; i < connect.length - 1; i++) {
      scanner.feed(connect.subarray(i, i + 1));
      expect(scanner.connectReceived).toBe(false);
    }
    scanner.feed(connect.subarray(connect.length - 1));
    expect(scanner.connectReceived).toBe(true);
  });
});

describe('WorkQueue', () => {
  it('runs at most `limit` tasks at once and the rest in arrival order, none refused', async () => {
    const queue = new WorkQueue(2);
    const started: number[] = [];
    const releases: (() => void)[] = [];
    const results = Array.from({ length: 5 }, (_, i) =>
      queue.run(async () => {
        started.push(i);
        await new Promise<void>((resolve) => releases.push(resolve));
        return i;
      }),
    );
    await new Promise((resolve) => setImmediate(resolve));
    expect(started).toEqual([0, 1]);
    expect(queue.depth).toEqual({ running: 2, waiting: 3 });
    for (let round = 0; round < 5; round++) {
      releases.shift()?.();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await Promise.all(results)).toEqual([0, 1, 2, 3, 4]);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(queue.depth).toEqual({ running: 0, waiting: 0 });
    // A task that throws frees its slot too.
    await expect(queue.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(queue.depth).toEqual({ running: 0, waiting: 0 });
  });
});
