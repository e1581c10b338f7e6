import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ApiKeyListSchema,
  ApiKeySchema,
  AuditPageSchema,
  CreatedApiKeySchema,
  CreatedEnrollmentTokenSchema,
  LoginResponseSchema,
  PrincipalSchema,
  UserListSchema,
  UserSchema,
} from '@flotilla/protocol';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';

describeBackends('users and API keys', (backend) => {
  let t: TestControlPlane;
  let admin: string;
  let adminId: string;

  const login = async (email: string, password: string) => LoginResponseSchema.parse((await api(t.cp, '/api/v1/auth/login', { body: { email, password } })).body);

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    const creds = JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as { adminEmail: string; adminPassword: string };
    const session = await login(creds.adminEmail, creds.adminPassword);
    admin = session.token;
    adminId = session.user.id;
  });
  afterAll(() => t?.dispose());

  it('creates users with roles; a viewer reads but changes nothing; duplicates and weak passwords are refused', async () => {
    const created = await api(t.cp, '/api/v1/users', { token: admin, body: { email: 'Viewer@Example.com', password: 'a-long-password-1', role: 'viewer' } });
    expect(created.status).toBe(201);
    const user = UserSchema.parse(created.body);
    expect(user).toMatchObject({ email: 'viewer@example.com', role: 'viewer', disabled: false, lastLoginAt: null });
    expect(JSON.stringify(created.body)).not.toMatch(/hash|a-long-password-1/i);
    const duplicate = await api<{ error: { code: string } }>(t.cp, '/api/v1/users', { token: admin, body: { email: 'viewer@example.com', password: 'a-long-password-2', role: 'viewer' } });
    expect(duplicate.status).toBe(409);
    const weak = await api<{ error: { message: string } }>(t.cp, '/api/v1/users', { token: admin, body: { email: 'x@example.com', password: 'short', role: 'viewer' } });
    expect(weak.status).toBe(400);
    expect(weak.body.error.message).toMatch(/^password: passwords have at least 12 characters/);

    const viewer = (await login('viewer@example.com', 'a-long-password-1')).token;
    const me = await api(t.cp, '/api/v1/auth/me', { token: viewer });
    expect(PrincipalSchema.parse(me.body)).toEqual({ actor: `user:${user.id}`, role: 'viewer', userId: user.id });
    const users = UserListSchema.parse((await api(t.cp, '/api/v1/users', { token: admin })).body);
    expect(users.items.find((u) => u.id === user.id)?.lastLoginAt).not.toBeNull();
    expect((await api(t.cp, '/api/v1/devices', { token: viewer })).status).toBe(200);
    expect((await api(t.cp, '/api/v1/enrollment-tokens', { token: viewer, body: {} })).status).toBe(403);
    expect((await api(t.cp, '/api/v1/users', { token: viewer, body: { email: 'y@example.com', password: 'a-long-password-3', role: 'admin' } })).status).toBe(403);

    // Disabling the viewer ends its sessions at once.
    const disabled = await api(t.cp, `/api/v1/users/${user.id}`, { method: 'PATCH', token: admin, body: { disabled: true } });
    expect(UserSchema.parse(disabled.body).disabled).toBe(true);
    expect((await api(t.cp, '/api/v1/devices', { token: viewer })).status).toBe(401);
    expect((await api(t.cp, '/api/v1/auth/login', { body: { email: 'viewer@example.com', password: 'a-long-password-1' } })).status).toBe(401);
  });

  it('refuses to demote or disable the last admin', async () => {
    const res = await api<{ error: { code: string } }>(t.cp, `/api/v1/users/${adminId}`, { method: 'PATCH', token: admin, body: { role: 'operator' } });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('CONFLICT');
  });

  it('issues admin API keys with a role, shows the secret once, and revokes them', async () => {
    const created = await api(t.cp, '/api/v1/api-keys', { token: admin, body: { scope: 'admin', name: 'ci operator', role: 'operator' } });
    expect(created.status).toBe(201);
    const adminKey = CreatedApiKeySchema.parse(created.body);
    const key = adminKey.key;
    expect(key.startsWith(adminKey.prefix)).toBe(true);
    expect(adminKey).toMatchObject({ scope: 'admin', role: 'operator', revokedAt: null });
    // An operator key mints enrollment tokens but cannot manage users.
    const minted = await api(t.cp, '/api/v1/enrollment-tokens', { token: key, body: { labels: { site: 'lab' }, uses: 3 } });
    expect(minted.status).toBe(201);
    expect(CreatedEnrollmentTokenSchema.parse(minted.body)).toMatchObject({ remainingUses: 3, labels: { site: 'lab' } });
    expect(PrincipalSchema.parse((await api(t.cp, '/api/v1/auth/me', { token: key })).body)).toEqual({ actor: `api-key:${adminKey.id}`, role: 'operator', userId: adminId });
    expect((await api(t.cp, '/api/v1/users', { token: key })).status).toBe(403);

    const listed = await api(t.cp, '/api/v1/api-keys', { token: admin });
    expect(ApiKeyListSchema.parse(listed.body).items.map((k) => k.id)).toContain(adminKey.id);
    expect(JSON.stringify(listed.body)).not.toContain(key);
    expect(JSON.stringify(listed.body)).not.toMatch(/keyHash|key_hash/);

    const revoked = await api(t.cp, `/api/v1/api-keys/${adminKey.id}/revoke`, { token: admin, body: {} });
    expect(revoked.status).toBe(201);
    expect(ApiKeySchema.parse(revoked.body).revokedAt).not.toBeNull();
    const after = await api<{ error: { code: string } }>(t.cp, '/api/v1/devices', { token: key });
    expect(after.status).toBe(401);

    const gateway = await api(t.cp, '/api/v1/api-keys', {
      token: admin,
      body: { scope: 'gateway', name: 'kiosk app', modelAllowList: ['flotilla-tiny'], rateLimitPerMinute: 60 },
    });
    expect(gateway.status).toBe(201);
    const gatewayKey = CreatedApiKeySchema.parse(gateway.body);
    expect(gatewayKey).toMatchObject({ scope: 'gateway', role: null, modelAllowList: ['flotilla-tiny'], rateLimitPerMinute: 60 });
    expect((await api(t.cp, '/api/v1/devices', { token: gatewayKey.key })).status).toBe(403);
    expect((await api(t.cp, '/v1/models', { token: gatewayKey.key })).status).toBe(200);
  });

  it('audits every change', async () => {
    const audit = await api(t.cp, '/api/v1/audit?limit=200', { token: admin });
    const actions = AuditPageSchema.parse(audit.body).items.map((e) => e.action);
    for (const action of ['user.create', 'user.update', 'api-key.create', 'api-key.revoke']) expect(actions).toContain(action);
  });
});
