import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from '../../test/support/broker.js';
import { eventually } from '../../test/support/control-plane.js';
import { testLogger } from '../../test/support/silent-logger.js';
import { BrokerUrls, MqttLink, reconnectDelay } from './mqtt-link.js';

describe('reconnectDelay', () => {
  it('grows exponentially, stays within [min, max] and spreads devices with jitter', () => {
    expect(reconnectDelay(0, 500, 30_000, 0)).toBe(500);
    expect(reconnectDelay(0, 500, 30_000, 1)).toBe(500);
    expect(reconnectDelay(3, 500, 30_000, 1)).toBe(4000);
    expect(reconnectDelay(30, 500, 30_000, 1)).toBe(30_000);
    const fleet = Array.from({ length: 100 }, (_, index) => reconnectDelay(5, 500, 30_000, index / 100));
    expect(new Set(fleet).size).toBe(100);
    expect(Math.min(...fleet)).toBeGreaterThanOrEqual(500);
    expect(Math.max(...fleet)).toBeLessThanOrEqual(16_000);
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
