import { createServer } from 'node:http';
import { connectAsync, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedBroker, type BrokerMessage, type BrokerSecurity, type EmbeddedBrokerOptions } from '../../src/platform/broker/embedded-broker.js';
import { selfSignedCertificate } from '../support/tls.js';
import { pollUntil } from '../support/poll.js';

// A real, tiny policy: user "dev-a" with password "pw" may use only "own/dev-a/#".
const security: BrokerSecurity = {
  authenticate: async (clientId, username, password) =>
    username === clientId && password?.toString() === 'pw' ? { deviceId: clientId } : null,
  canPublish: (p, topic) => topic.startsWith(`own/${p.deviceId}/`),
  canSubscribe: (p, filter) => filter.startsWith(`own/${p.deviceId}/`),
};

describe('EmbeddedBroker', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function start(maxMessageBytes = 1024, open = true, tls?: EmbeddedBrokerOptions['tls']) {
    const broker = await EmbeddedBroker.start({
      tls,
      host: '127.0.0.1',
      port: 0,
      keepaliveLimitSeconds: 60,
      maxMessageBytes,
      security,
      logger: pino({ level: 'silent' }),
    });
    cleanups.push(() => broker.close());
    if (open) broker.open();
    return broker;
  }

  async function client(url: string, id = 'dev-a', password = 'pw'): Promise<MqttClient> {
    const c = await connectAsync(url, { clientId: id, username: id, password, reconnectPeriod: 0 });
    cleanups.push(() => c.endAsync(true));
    return c;
  }

  it('delivers an authorised device publish to the control plane and refuses bad credentials', async () => {
    const broker = await start();
    const received: BrokerMessage[] = [];
    await broker.subscribe('own/+/hello', (m) => received.push(m));
    const c = await client(`mqtt://127.0.0.1:${broker.port}`);
    await c.publishAsync('own/dev-a/hello', 'hi', { qos: 1 });
    await pollUntil(() => received.length === 1, { what: 'hello' });
    expect(received[0]?.payload.toString()).toBe('hi');
    await expect(
      connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'dev-a', username: 'dev-a', password: 'nope', reconnectPeriod: 0 }),
    ).rejects.toThrow(/Bad username or password/i);
  });

  it('serves MQTT over TLS on its own port when a certificate is configured', async () => {
    const { cert, key, dispose } = await selfSignedCertificate();
    cleanups.push(dispose);
    const broker = await start(1024, true, { host: '127.0.0.1', port: 0, cert, key });
    expect(broker.tlsPort).toBeGreaterThan(0);
    const received: string[] = [];
    await broker.subscribe('own/+/hello', (m) => received.push(m.payload.toString()));
    const c = await connectAsync(`mqtts://127.0.0.1:${broker.tlsPort}`, { clientId: 'dev-a', username: 'dev-a', password: 'pw', reconnectPeriod: 0, ca: cert, servername: 'localhost' });
    cleanups.push(() => c.endAsync(true));
    await c.publishAsync('own/dev-a/hello', 'over tls', { qos: 1 });
    await pollUntil(() => received.includes('over tls'), { what: 'TLS hello' });
    // A client that does not trust the certificate is refused by its own TLS check.
    await expect(
      connectAsync(`mqtts://127.0.0.1:${broker.tlsPort}`, { clientId: 'dev-a', username: 'dev-a', password: 'pw', reconnectPeriod: 0, connectTimeout: 3000 }),
    ).rejects.toThrow(/self[- ]signed|certificate/i);
  });

  it('holds connections made before open() and serves them once the control plane is subscribed', async () => {
    const broker = await start(1024, false);
    let connected = false;
    const pending = connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: 'dev-a', username: 'dev-a', password: 'pw', reconnectPeriod: 0 }).then(
      (c) => {
        connected = true;
        cleanups.push(() => c.endAsync(true));
        return c;
      },
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(connected).toBe(false);
    const received: string[] = [];
    await broker.subscribe('own/+/hello', (m) => received.push(m.payload.toString()));
    broker.open();
    const c = await pending;
    await c.publishAsync('own/dev-a/hello', 'first', { qos: 1 });
    await pollUntil(() => received.includes('first'), { what: 'first hello' });
  });

  it('refuses a subscription outside the policy and drops an unauthorised publish', async () => {
    const broker = await start();
    const c = await client(`mqtt://127.0.0.1:${broker.port}`);
    // SUBACK 0x80: mqtt.js reports the refused grant as an error.
    await expect(c.subscribeAsync('own/dev-b/#', { qos: 1 })).rejects.toThrow(/Subscribe error/);
    const seen: string[] = [];
    await broker.subscribe('own/#', (m) => seen.push(m.topic));
    // aedes disconnects a client whose QoS1 publish is not authorised.
    await c.publishAsync('own/dev-b/x', 'spoof', { qos: 0 });
    await c.publishAsync('own/dev-a/ok', 'fine', { qos: 0 }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).not.toContain('own/dev-b/x');
  });

  it('rejects messages over the size limit', async () => {
    const broker = await start(64);
    const seen: string[] = [];
    await broker.subscribe('own/#', (m) => seen.push(m.payload.toString()));
    const c = await client(`mqtt://127.0.0.1:${broker.port}`);
    await c.publishAsync('own/dev-a/big', 'x'.repeat(65), { qos: 0 });
    const d = await client(`mqtt://127.0.0.1:${broker.port}`, 'dev-a', 'pw');
    await d.publishAsync('own/dev-a/small', 'y', { qos: 1 });
    await pollUntil(() => seen.includes('y'), { what: 'small message' });
    expect(seen).not.toContain('x'.repeat(65));
  });

  it('serves MQTT over WebSocket at /mqtt and publishes retained messages to late subscribers', async () => {
    const broker = await start();
    const http = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => http.close(r)));
    broker.attachWebSocket(http, '/mqtt');
    const address = http.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    await broker.publish('own/dev-a/desired', JSON.stringify({ v: 1 }), { qos: 1, retain: true });
    const c = await client(`ws://127.0.0.1:${address.port}/mqtt`);
    const got = new Promise<string>((resolve) => c.on('message', (_t, p) => resolve(p.toString())));
    await c.subscribeAsync('own/dev-a/desired', { qos: 1 });
    expect(await got).toBe('{"v":1}');
  });
});
