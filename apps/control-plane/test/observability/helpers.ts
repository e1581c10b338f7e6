import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreatedEnrollmentTokenSchema, type EnrollResponse, EnrollResponseSchema, LoginResponseSchema } from '@flotilla/protocol';
import type { ControlPlane } from '../../src/app/create-app.js';
import { hashPassword } from '../../src/identity/auth/secrets.js';
import { api, type TestControlPlane } from '../support/control-plane.js';

export async function loginAdmin(t: TestControlPlane): Promise<string> {
  const creds = JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as { adminEmail: string; adminPassword: string };
  const login = await api(t.cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: creds.adminPassword } });
  if (login.status !== 200) throw new Error(`admin login failed: ${login.status} ${JSON.stringify(login.body)}`);
  return LoginResponseSchema.parse(login.body).token;
}

/** A user of `role` created directly in the database (argon2id hash as the app makes), logged in. */
export async function loginAs(cp: ControlPlane, role: 'viewer' | 'operator' | 'admin', email = `${role}-${Date.now()}@flotilla.test`): Promise<string> {
  const password = `pw-${role}-${Math.random().toString(36).slice(2)}`;
  await cp.database.prisma.user.create({ data: { email, role, passwordHash: await hashPassword(password) } });
  const login = await api(cp, '/api/v1/auth/login', { body: { email, password } });
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${JSON.stringify(login.body)}`);
  return LoginResponseSchema.parse(login.body).token;
}

export type EnrolledDevice = EnrollResponse;

export async function enrollDevice(cp: ControlPlane, adminToken: string, name: string): Promise<EnrolledDevice> {
  const minted = await api(cp, '/api/v1/enrollment-tokens', { token: adminToken, body: { uses: 1 } });
  if (minted.status !== 201) throw new Error(`token: ${minted.status} ${JSON.stringify(minted.body)}`);
  const enrolled = await api(cp, '/api/v1/enroll', { body: { token: CreatedEnrollmentTokenSchema.parse(minted.body).token, name } });
  if (enrolled.status !== 201) throw new Error(`enroll: ${enrolled.status} ${JSON.stringify(enrolled.body)}`);
  return EnrollResponseSchema.parse(enrolled.body);
}
