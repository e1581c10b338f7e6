import type { Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { hashSecret } from '../../src/identity/auth/secrets.js';
import { rawConnect } from './mqtt-clients.js';

interface Enrolled {
  deviceId: string;
  mqtt: { username: string; password: string };
}

const closed = (socket: Socket) => socket.destroyed || socket.readableEnded;

// Issue 11, cause 6: CONNECTs are checked against credentials cached in memory; a revocation must still shut the
// device out at once (within 1 s), its live session cut, although nothing reads the database on CONNECT any more.
describeBackends('device credentials cached for the broker', (backend) => {
  let t: TestControlPlane;
  let admin: string;
  let enrollmentToken: string;
  const sockets: Socket[] = [];

  const enroll = async (name: string) => (await api<Enrolled>(t.cp, '/api/v1/enroll', { body: { token: enrollmentToken, name } })).body;
  const connect = (device: Enrolled, password = device.mqtt.password) => rawConnect({ port: t.cp.mqttPort, clientId: device.deviceId, password }, sockets);

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    admin = (await adminLogin(t.cp, t.isolated.dataDir)).adminToken;
    enrollmentToken = (await api<{ token: string }>(t.cp, '/api/v1/enrollment-tokens', { token: admin, body: { uses: 10 } })).body.token;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await t?.dispose();
  });

  it('refuses a revoked credential within 1 s with credentials cached, and cuts its live session', { timeout: 30_000 }, async () => {
    // Enrolled after start: its first CONNECT misses the cache and loads the row.
    const device = await enroll('cached');
    const first = await connect(device);
    expect(first).toMatchObject({ kind: 'connack', returnCode: 0 });
    if (first.kind !== 'connack') throw new Error('expected a CONNACK');

    // Proof that CONNECTs are served from memory: the row's hash changed behind the cache's back, the old secret still
    // passes (a credential is only ever replaced through the services that invalidate the cache).
    await t.cp.database.prisma.deviceCredential.update({ where: { mqttUsername: device.deviceId }, data: { secretHash: hashSecret('not the secret') } });
    const cached = await connect(device);
    expect(cached, 'served from the cache').toMatchObject({ kind: 'connack', returnCode: 0 });
    if (cached.kind !== 'connack') throw new Error('expected a CONNACK');
    await pollUntil(() => closed(first.socket), { timeoutMs: 5000, what: 'the first session taken over' });

    const revoked = await api(t.cp, `/api/v1/devices/${device.deviceId}/revoke`, { token: admin, body: {} });
    expect(revoked.status).toBe(200);
    const revokedAt = Date.now();
    // Its live session is cut, and a reconnect from then on is refused: both within 1 s of the revocation.
    await pollUntil(() => closed(cached.socket), { timeoutMs: 1000, what: 'the live session cut' });
    const again = await connect(device);
    const refusedAfterMs = Date.now() - revokedAt;
    expect(again.kind === 'connack' ? again.returnCode : again.kind, `reconnect ${refusedAfterMs} ms after the revocation`).not.toBe(0);
    expect(refusedAfterMs).toBeLessThan(1000);
    // Still refused later (nothing puts the revoked credential back).
    const later = await connect(device);
    expect(later.kind === 'connack' ? later.returnCode : later.kind).not.toBe(0);
  });

  it('serves other devices from the cache and refuses a wrong secret or an unknown device', { timeout: 30_000 }, async () => {
    const device = await enroll('other');
    expect(await connect(device)).toMatchObject({ kind: 'connack', returnCode: 0 });
    expect(await connect(device, 'flt_dev_wrong')).toMatchObject({ kind: 'connack', returnCode: 4 });
    expect(await connect({ deviceId: '0193b6a0-0000-7000-8000-000000000000', mqtt: { username: 'x', password: device.mqtt.password } })).toMatchObject({
      kind: 'connack',
      returnCode: 4,
    });
    // A restart warms the cache from the database: the device is known before its first CONNECT.
    await t.restart();
    expect(await connect(device)).toMatchObject({ kind: 'connack', returnCode: 0 });
  });
});
