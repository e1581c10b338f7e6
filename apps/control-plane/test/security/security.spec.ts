import { connect as connectTcp } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import {
  ApiErrorBodySchema,
  CreatedEnrollmentTokenSchema,
  type EnrollResponse,
  EnrollResponseSchema,
  LoginResponseSchema,
  TOPIC_KINDS,
  TOPIC_SPECS,
  agentSubscriptions,
  topicFor,
} from '@flotilla/protocol';
import { connectAsync, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startControlPlane, type ControlPlane } from '../../src/app/create-app.js';
import { api, testConfig } from '../support/control-plane.js';
import { createIsolatedDatabase, describeBackends, type IsolatedDatabase } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';

/** What `asDevice` needs of an enrollment answer (also made up, for a device that does not exist). */
type Enrolled = Pick<EnrollResponse, 'deviceId'> & { mqtt: Pick<EnrollResponse['mqtt'], 'username' | 'password'> };

describeBackends('security', (backend) => {
  let isolated: IsolatedDatabase;
  let cp: ControlPlane;
  const logText: string[] = [];
  const responses: string[] = [];
  let admin: { adminEmail: string; adminPassword: string; apiKey: string };
  let session: string;
  let enrollmentToken: string;
  let a: Enrolled;
  let b: Enrolled;
  const seen: string[] = [];

  const call = async <T>(path: string, init: Parameters<typeof api>[2] = {}) => {
    const res = await api<T>(cp, path, init);
    responses.push(JSON.stringify(res.body));
    return res;
  };
  const mqttUrl = () => `mqtt://127.0.0.1:${cp.mqttPort}`;
  const asDevice = (d: Enrolled, clientId = d.deviceId): Promise<MqttClient> =>
    connectAsync(mqttUrl(), { clientId, username: d.mqtt.username, password: d.mqtt.password, reconnectPeriod: 0, connectTimeout: 5000 });

  beforeAll(async () => {
    isolated = await createIsolatedDatabase(backend);
    // Every log line at the most verbose level, to prove no secret is ever printed.
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        logText.push(chunk.toString('utf8'));
        done();
      },
    });
    cp = await startControlPlane(testConfig(isolated), pino({ level: 'trace' }, sink));
    admin = JSON.parse(await readFile(join(isolated.dataDir, 'initial-credentials.json'), 'utf8')) as typeof admin;
    session = LoginResponseSchema.parse((await call('/api/v1/auth/login', { body: { email: admin.adminEmail, password: admin.adminPassword } })).body).token;
    enrollmentToken = CreatedEnrollmentTokenSchema.parse((await call('/api/v1/enrollment-tokens', { token: session, body: { uses: 2 } })).body).token;
    a = EnrollResponseSchema.parse((await call('/api/v1/enroll', { body: { token: enrollmentToken, name: 'a' } })).body);
    b = EnrollResponseSchema.parse((await call('/api/v1/enroll', { body: { token: enrollmentToken, name: 'b' } })).body);
    await cp.broker.subscribe('#', (m) => seen.push(m.topic));
  });
  afterAll(async () => {
    await cp?.close();
    await isolated?.dispose();
  });

  it('[P-2.3] a device subscribes only to its own cp-to-agent topics: many generated filters, wildcards and $SYS', async () => {
    const own = new Set(agentSubscriptions(a.deviceId));
    const filters = [
      ...TOPIC_KINDS.flatMap((k) => [topicFor(k, a.deviceId), topicFor(k, b.deviceId)]),
      '#',
      '+',
      '+/#',
      'flotilla/#',
      'flotilla/v1/#',
      'flotilla/v1/devices/#',
      'flotilla/v1/devices/+/desired',
      `flotilla/v1/devices/${a.deviceId}/#`,
      `flotilla/v1/devices/${a.deviceId}/+`,
      `flotilla/v1/devices/${a.deviceId}/inference/#`,
      `flotilla/v1/devices/${a.deviceId}/desired/#`,
      `flotilla/v1/devices/${a.deviceId}/desired/extra`,
      `flotilla/v2/devices/${a.deviceId}/desired`,
      `flotilla/v1/devices/${a.deviceId.toUpperCase()}/desired`,
      '$SYS/#',
      '$SYS/broker/clients',
      '$share/group/#',
      `$share/g/flotilla/v1/devices/${a.deviceId}/desired`,
      `/flotilla/v1/devices/${a.deviceId}/desired`,
      `flotilla/v1/devices/${a.deviceId}//desired`,
      'anything/else',
    ];
    const client = await asDevice(a);
    try {
      const granted: string[] = [];
      for (const filter of filters) {
        const ok = await client.subscribeAsync(filter, { qos: 1 }).then(
          () => true,
          () => false,
        );
        if (ok) granted.push(filter);
      }
      expect(granted.sort()).toEqual([...own].sort());
      expect(filters.length).toBeGreaterThan(40);
    } finally {
      await client.endAsync(true);
    }
  });

  it('[P-2.3] a device publishes only its own agent-to-cp topics; anything else is dropped and its connection closed', async () => {
    const allowed = TOPIC_KINDS.filter((k) => TOPIC_SPECS[k].direction === 'agent-to-cp').map((k) => topicFor(k, a.deviceId));
    const denied = [
      ...TOPIC_KINDS.filter((k) => TOPIC_SPECS[k].direction === 'cp-to-agent').map((k) => topicFor(k, a.deviceId)),
      ...TOPIC_KINDS.map((k) => topicFor(k, b.deviceId)),
      '$SYS/broker/uptime',
      'flotilla/v1/devices',
      `flotilla/v1/devices/${a.deviceId}`,
      `flotilla/v1/devices/${a.deviceId}/hello/extra`,
      `flotilla/v2/devices/${a.deviceId}/hello`,
      'other/topic',
    ];
    for (const topic of [...allowed, ...denied]) {
      const client = await asDevice(a);
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      client.publish(topic, '{}', { qos: 0 });
      if (allowed.includes(topic)) {
        await pollUntil(() => seen.includes(topic), { timeoutMs: 5000, what: `delivery of ${topic}` });
        expect(client.connected).toBe(true);
        await client.endAsync(true);
      } else {
        await closed; // aedes drops the client after an unauthorised publish
        await client.endAsync(true);
      }
    }
    await new Promise((r) => setTimeout(r, 200));
    for (const topic of denied) expect(seen, topic).not.toContain(topic);
  });

  it('refuses another device\u2019s client id, a wrong password, an unknown user', async () => {
    await expect(asDevice(a, b.deviceId)).rejects.toThrow(/Bad username or password/i);
    await expect(asDevice({ ...a, mqtt: { ...a.mqtt, password: b.mqtt.password } })).rejects.toThrow(/Bad username or password/i);
    await expect(asDevice({ deviceId: 'nobody-here', mqtt: { username: 'nobody-here', password: 'x' } })).rejects.toThrow(/Bad username or password/i);
    const ok = await asDevice(a);
    await ok.endAsync(true);
  });

  it('refuses used-up and expired enrollment tokens', async () => {
    const usedUp = await call('/api/v1/enroll', { body: { token: enrollmentToken } });
    expect(usedUp.status).toBe(401);
    expect(ApiErrorBodySchema.parse(usedUp.body).error.code).toBe('ENROLLMENT_TOKEN_INVALID');
    const fresh = CreatedEnrollmentTokenSchema.parse((await call('/api/v1/enrollment-tokens', { token: session, body: { uses: 5 } })).body);
    await cp.database.prisma.enrollmentToken.update({ where: { id: fresh.id }, data: { expiresAt: new Date(Date.now() - 1000) } });
    const expired = await call('/api/v1/enroll', { body: { token: fresh.token } });
    expect(expired.status).toBe(401);
    expect(ApiErrorBodySchema.parse(expired.body).error.code).toBe('ENROLLMENT_TOKEN_INVALID');
    expect(await cp.database.prisma.device.count()).toBe(2);
  });

  it('survives malformed and oversized MQTT packets with the connection closed and the process serving', async () => {
    const garbage = connectTcp(cp.mqttPort, '127.0.0.1');
    const garbageClosed = new Promise<void>((resolve) => garbage.once('close', () => resolve()));
    garbage.on('error', () => undefined);
    garbage.write(Buffer.from([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xde, 0xad, 0xbe, 0xef])); // CONNECT with an invalid length
    await garbageClosed;

    const client = await asDevice(a);
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.publish(topicFor('telemetry', a.deviceId), Buffer.alloc(2 * 1024 * 1024, 0x61), { qos: 0 });
    await closed;
    await client.endAsync(true);

    expect((await api(cp, '/healthz')).status).toBe(200);
    const again = await asDevice(a);
    expect(again.connected).toBe(true);
    await again.endAsync(true);
  });

  it('never prints or returns a secret or a hash', async () => {
    // Exercise the paths that handle secrets once more, then read everything that was logged and answered.
    await call('/api/v1/auth/login', { body: { email: admin.adminEmail, password: 'not-the-password' } });
    await call('/api/v1/devices', { token: session });
    await call(`/api/v1/devices/${a.deviceId}`, { token: session });
    await call('/api/v1/audit?limit=200', { token: session });
    await call('/v1/models', { token: admin.apiKey });
    const hashes = [
      ...(await cp.database.prisma.user.findMany()).map((u) => u.passwordHash),
      ...(await cp.database.prisma.apiKey.findMany()).map((k) => k.keyHash),
      ...(await cp.database.prisma.deviceCredential.findMany()).map((c) => c.secretHash),
      ...(await cp.database.prisma.enrollmentToken.findMany()).map((t) => t.tokenHash),
      ...(await cp.database.prisma.session.findMany()).map((s) => s.tokenHash),
    ];
    const secrets = [admin.adminPassword, admin.apiKey, session, enrollmentToken, a.mqtt.password, b.mqtt.password];
    const logs = logText.join('');
    const answered = responses.slice(5).join('\n'); // the first answers are the login/enroll ones that hand secrets out
    expect(logs.length).toBeGreaterThan(1000);
    for (const value of [...secrets, ...hashes]) {
      expect(logs.includes(value), `log contains ${value.slice(0, 12)}...`).toBe(false);
      expect(answered.includes(value), `API answer contains ${value.slice(0, 12)}...`).toBe(false);
    }
    for (const field of ['passwordHash', 'keyHash', 'secretHash', 'tokenHash', 'password_hash', 'secret_hash']) {
      expect(answered).not.toContain(field);
    }
  });
});
