import { stat, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ApiErrorBodySchema, CreatedEnrollmentTokenSchema, DevicePageSchema, EnrollResponseSchema, LivenessSchema, LoginResponseSchema, ReadinessReportSchema, topics } from '@flotilla/protocol';
import { connectAsync } from 'mqtt';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane } from '../../src/app/create-app.js';
import { PortInUseError } from '../../src/platform/common/ports.js';
import { createIsolatedDatabase, describeBackends } from '../support/databases.js';
import { api, startTestControlPlane, testConfig, type TestControlPlane } from '../support/control-plane.js';
import { selfSignedCertificate } from '../support/tls.js';

describeBackends('control plane start-up', (backend) => {
  let t: TestControlPlane;
  beforeAll(async () => {
    t = await startTestControlPlane(backend);
  });
  afterAll(() => t?.dispose());

  it('answers /healthz and /readyz', async () => {
    expect(LivenessSchema.parse((await api(t.cp, '/healthz')).body)).toEqual({ status: 'ok' });
    const ready = await api(t.cp, '/readyz');
    expect(ready.status).toBe(200);
    expect(ReadinessReportSchema.parse(ready.body).checks).toEqual({ database: { ok: true }, broker: { ok: true } });
  });

  it('creates the first admin and gateway key once, in a 0600 file', async () => {
    const file = join(t.isolated.dataDir, 'initial-credentials.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
    expect(Object.keys(saved).sort()).toEqual(['adminEmail', 'adminPassword', 'apiKey']);
    expect(saved).toEqual(t.cp.initialCredentials);
    const cp = await t.restart();
    expect(cp.initialCredentials).toBeNull();
    expect(cp.database.migrationReport.applied).toEqual([]);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(saved);
  });

  it('logs the admin in, mints an enrollment token, enrolls a device that then speaks MQTT in its own subtree only', async () => {
    const creds = JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as Record<string, string>;
    const wrong = await api(t.cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: 'wrong' } });
    expect(wrong.status).toBe(401);
    const login = await api(t.cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: creds.adminPassword } });
    expect(login.status).toBe(200);
    const session = LoginResponseSchema.parse(login.body);
    const minted = await api(t.cp, '/api/v1/enrollment-tokens', {
      token: session.token,
      body: { labels: { zone: 'a' }, uses: 1 },
    });
    expect(minted.status).toBe(201);
    const { token } = CreatedEnrollmentTokenSchema.parse(minted.body);
    const enrolled = await api(t.cp, '/api/v1/enroll', { body: { token, name: 'kiosk-1' } });
    expect(enrolled.status).toBe(201);
    const again = await api(t.cp, '/api/v1/enroll', { body: { token } });
    expect(again.status).toBe(401);
    expect(ApiErrorBodySchema.parse(again.body).error.code).toBe('ENROLLMENT_TOKEN_INVALID');

    const { deviceId, mqtt } = EnrollResponseSchema.parse(enrolled.body);
    expect(mqtt.urls).toContain(`mqtt://127.0.0.1:${t.cp.mqttPort}`);
    const client = await connectAsync(`mqtt://127.0.0.1:${t.cp.mqttPort}`, {
      clientId: deviceId,
      username: mqtt.username,
      password: mqtt.password,
      reconnectPeriod: 0,
    });
    try {
      await client.subscribeAsync(topics.desired(deviceId), { qos: 1 });
      await expect(client.subscribeAsync('flotilla/v1/devices/+/desired', { qos: 1 })).rejects.toThrow(/Subscribe error/);
      await expect(client.subscribeAsync('$SYS/#', { qos: 1 })).rejects.toThrow(/Subscribe error/);
    } finally {
      await client.endAsync(true);
    }
    await expect(
      connectAsync(`mqtt://127.0.0.1:${t.cp.mqttPort}`, { clientId: 'someone-else', username: mqtt.username, password: mqtt.password, reconnectPeriod: 0 }),
    ).rejects.toThrow(/Bad username or password/i);

    const devices = await api(t.cp, '/api/v1/devices', { token: session.token });
    expect(DevicePageSchema.parse(devices.body).items).toEqual([expect.objectContaining({ id: deviceId, name: 'kiosk-1', labels: { zone: 'a' }, hardware: null })]);
    expect(JSON.stringify(devices.body)).not.toContain(mqtt.password);
  });

  it('refuses unauthenticated and gateway-key callers on the admin API, with clear errors', async () => {
    const anonymous = await api<{ error: { code: string } }>(t.cp, '/api/v1/devices');
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error.code).toBe('UNAUTHORIZED');
    const gatewayKey = t.cp.initialCredentials?.apiKey ?? (JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as { apiKey: string }).apiKey;
    const withGatewayKey = await api<{ error: { code: string } }>(t.cp, '/api/v1/devices', { token: gatewayKey });
    expect(withGatewayKey.status).toBe(403);
    const malformed = await api<{ error: { code: string; message: string } }>(t.cp, '/api/v1/auth/login', { rawBody: '{"email":' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.error.message).toMatch(/JSON/);
    const invalid = await api<{ error: { code: string; message: string } }>(t.cp, '/api/v1/enroll', { body: { token: 5 } });
    expect(invalid.status).toBe(400);
    expect(invalid.body.error).toMatchObject({ code: 'INVALID_REQUEST' });
    expect(invalid.body.error.message).toMatch(/^token: /);
    const big = await api<{ error: { code: string } }>(t.cp, '/api/v1/enroll', { rawBody: JSON.stringify({ token: 'x'.repeat(2 * 1024 * 1024) }) });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    const unknown = await api<{ error: { code: string } }>(t.cp, '/api/v1/nothing-here');
    expect(unknown.status).toBe(404);
  });
});

describe('control plane ports', () => {
  it('stops with one line naming the port and the variable when the MQTT port is taken', async () => {
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const address = holder.address();
    if (!address || typeof address === 'string') throw new Error('no port');
    const isolated = await createIsolatedDatabase('pglite');
    try {
      const error = await startControlPlane(testConfig(isolated, { FLOTILLA_MQTT_PORT: String(address.port) }), pino({ level: 'silent' })).catch(
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(PortInUseError);
      expect((error as Error).message).toMatch(new RegExp(`^Port ${address.port} \\(MQTT\\) is already in use: set FLOTILLA_MQTT_PORT`));
    } finally {
      await new Promise((r) => holder.close(r));
      await isolated.dispose();
    }
  });
});

describe('control plane MQTT over TLS', () => {
  it('serves mqtts:// when a certificate is configured and hands enrolling devices that URL first', async () => {
    const certificate = await selfSignedCertificate();
    const t = await startTestControlPlane('pglite', {
      FLOTILLA_MQTT_TLS_PORT: '0',
      FLOTILLA_MQTT_TLS_CERT_FILE: certificate.certFile,
      FLOTILLA_MQTT_TLS_KEY_FILE: certificate.keyFile,
    });
    try {
      const creds = JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as Record<string, string>;
      const login = await api<{ token: string }>(t.cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: creds.adminPassword } });
      const minted = await api<{ token: string }>(t.cp, '/api/v1/enrollment-tokens', { token: login.body.token, body: {} });
      const enrolled = await api<{ deviceId: string; mqtt: { username: string; password: string; urls: string[] } }>(t.cp, '/api/v1/enroll', {
        body: { token: minted.body.token },
      });
      const tlsUrl = `mqtts://127.0.0.1:${t.cp.broker.tlsPort}`;
      expect(enrolled.body.mqtt.urls[0]).toBe(tlsUrl);
      expect(enrolled.body.mqtt.urls).toContain(`mqtt://127.0.0.1:${t.cp.mqttPort}`);
      const client = await connectAsync(tlsUrl, {
        clientId: enrolled.body.deviceId,
        username: enrolled.body.mqtt.username,
        password: enrolled.body.mqtt.password,
        ca: certificate.cert,
        servername: 'localhost',
        reconnectPeriod: 0,
      });
      await client.subscribeAsync(topics.desired(enrolled.body.deviceId), { qos: 1 });
      await client.endAsync(true);
    } finally {
      await t.dispose();
      await certificate.dispose();
    }
  });
});
