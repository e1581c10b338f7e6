import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from '../../test/support/broker.js';
import { eventually } from '../../test/support/control-plane.js';
import { testLogger } from '../../test/support/silent-logger.js';
import { BrokerUrls, MqttLink, reconnectDelay } from './mqtt-link.js';

/** A seeded generator (mulberry32): the same fleet every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Largest share of `times` falling in any `width`-ms window. */
function densestShare(times: number[], width: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while ((sorted[i] as number) - (sorted[j] as number) >= width) j++;
    best = Math.max(best, i - j + 1);
  }
  return best / sorted.length;
}

describe('reconnectDelay', () => {
  it('grows exponentially, stays within [min/2, max] and spreads devices with jitter', () => {
    expect(reconnectDelay(0, 500, 30_000, 0)).toBe(250);
    expect(reconnectDelay(0, 500, 30_000, 1)).toBe(1000);
    expect(reconnectDelay(3, 500, 30_000, 1)).toBe(8000);
    expect(reconnectDelay(30, 500, 30_000, 1)).toBe(30_000);
    const fleet = Array.from({ length: 100 }, (_, index) => reconnectDelay(5, 500, 30_000, index / 100));
    expect(new Set(fleet).size).toBe(100);
    expect(Math.min(...fleet)).toBeGreaterThanOrEqual(250);
    expect(Math.max(...fleet)).toBeLessThanOrEqual(30_000);
  });

  it('spreads a fleet whose connections all dropped at once: even the first reconnect attempt is jittered', () => {
    // 10,000 devices lose the broker at the same instant (a control-plane restart) with the default settings.
    const random = seeded(11);
    const first = Array.from({ length: 10_000 }, () => reconnectDelay(0, 500, 30_000, random()));
    const spread = Math.max(...first) - Math.min(...first);
    const densest = densestShare(first, 50);
    const figures = `first attempts from ${Math.min(...first)} to ${Math.max(...first)} ms; densest 50 ms window holds ${(densest * 100).toFixed(1)} % of the fleet`;
    expect(spread, figures).toBeGreaterThanOrEqual(700);
    // Uniform over 750 ms: ~6.7 % per 50 ms window; in lockstep it would be 100 %.
    expect(densest, figures).toBeLessThan(0.1);
  });

  it('brings a fleet back after a 5 s outage spread over seconds, not in a wave', () => {
    // Each device retries (refused at once while the control plane is down) until an attempt lands after it is back.
    const random = seeded(7);
    const downMs = 5000;
    const back = Array.from({ length: 10_000 }, () => {
      let at = 0;
      for (let attempt = 0; at < downMs; attempt++) at += reconnectDelay(attempt, 500, 30_000, random());
      return at;
    });
    const densest = densestShare(back, 100);
    const within1s = back.filter((t) => t < downMs + 1000).length / back.length;
    const figures = `densest 100 ms window ${(densest * 100).toFixed(1)} %; ${(within1s * 100).toFixed(1)} % back within 1 s of the restart; last at ${Math.max(...back) - downMs} ms`;
    expect(densest, figures).toBeLessThan(0.05);
    expect(within1s, figures).toBeLessThan(0.5);
  });
});

describe('BrokerUrls', () => {
  it('moves to the next URL after repeated failures, wraps around, and starts counting again after a connection', () => {
    const urls = new BrokerUrls(['mqtt://a', 'ws://b/mqtt', 'mqtt://c'], 2);
    expect(urls.current).toBe('mqtt://a');
    expect(urls.failed()).toBe(false);
    expect(urls.failed()).toBe(true);
    expect(urls.current).toBe('ws://b/mqtt');
    expect(urls.failed()).toBe(false);
    urls.connected();
    expect(urls.failed()).toBe(false);
    expect(urls.failed()).toBe(true);
    expect(urls.current).toBe('mqtt://c');
    urls.failed();
    urls.failed();
    expect(urls.current).toBe('mqtt://a');
  });

  it('keeps a single URL and refuses an empty list', () => {
    const single = new BrokerUrls(['mqtt://only'], 1);
    for (let index = 0; index < 5; index++) expect(single.failed()).toBe(false);
    expect(single.current).toBe('mqtt://only');
    expect(() => new BrokerUrls([], 3)).toThrow(/no MQTT URL/);
  });
});

describe('MqttLink broker failover against a real aedes broker', () => {
  const DEVICE = 'dev-link-01';
  let broker: TestBroker | undefined;
  let link: MqttLink | undefined;
  afterEach(async () => {
    await link?.stop();
    await broker?.close();
  });

  async function deadUrl(): Promise<string> {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    return `mqtt://127.0.0.1:${port}`;
  }

  function newLink(urls: string[], connectedTo: string[]): MqttLink {
    const ignore = (): void => undefined;
    return new MqttLink({
      credentials: { deviceId: DEVICE, username: DEVICE, password: 'pw', urls },
      keepaliveSeconds: 5,
      reconnectMinMs: 10,
      reconnectMaxMs: 40,
      failoverAfterAttempts: 2,
      agentVersion: '0.0.0-test',
      logger: testLogger(),
      handlers: { desired: ignore, inferenceRequest: ignore, inferenceCancel: ignore, command: ignore, outboxAck: ignore },
      onConnected: async () => {
        connectedTo.push(link?.currentUrl ?? '?');
      },
      onMalformed: ignore,
    });
  }

  it('skips a dead first URL and connects over the enrolled ws://.../mqtt URL', async () => {
    broker = await startBroker({ [DEVICE]: 'pw' }, { websocket: true });
    const wsUrl = broker.wsUrl as string;
    const connectedTo: string[] = [];
    link = newLink([await deadUrl(), wsUrl], connectedTo);
    link.start();
    await eventually(() => link?.connected, 5000, 'connection over WebSocket');
    expect(connectedTo).toEqual([wsUrl]);
    // The session works end to end: a QoS 1 publish is acknowledged by the broker.
    await link.publish('status', { v: 1, state: 'online', sessionId: link.currentSessionId, ts: Date.now(), reason: 'startup', agentVersion: '0.0.0-test' });
  });

  it('after a dropped connection, moves to the next URL once the first keeps failing', async () => {
    broker = await startBroker({ [DEVICE]: 'pw' }, { websocket: true });
    const wsUrl = broker.wsUrl as string;
    const connectedTo: string[] = [];
    link = newLink([broker.url, wsUrl], connectedTo);
    link.start();
    await eventually(() => link?.connected, 5000, 'first connection');
    // Only the TCP listener goes away; the WebSocket one stays.
    await broker.down();
    await eventually(() => connectedTo.length === 2, 5000, 'reconnection over WebSocket');
    expect(connectedTo).toEqual([broker.url, wsUrl]);
  });
});
