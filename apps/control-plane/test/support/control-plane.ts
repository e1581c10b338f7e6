import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { startControlPlane, type ControlPlane } from '../../src/app/create-app.js';
import { loadConfig } from '../../src/app/config.js';
import { createIsolatedDatabase, type IsolatedDatabase, type TestBackend } from './databases.js';

export interface TestControlPlane {
  cp: ControlPlane;
  isolated: IsolatedDatabase;
  /** restarts on the same data directory and database */
  restart(): Promise<ControlPlane>;
  dispose(): Promise<void>;
}

export function testConfig(isolated: IsolatedDatabase, env: Record<string, string> = {}) {
  return loadConfig({
    FLOTILLA_DATA_DIR: isolated.dataDir,
    FLOTILLA_HTTP_HOST: '127.0.0.1',
    FLOTILLA_HTTP_PORT: '0',
    FLOTILLA_MQTT_HOST: '127.0.0.1',
    FLOTILLA_MQTT_PORT: '0',
    FLOTILLA_LOG_LEVEL: 'silent',
    ...(isolated.databaseUrl ? { DATABASE_URL: isolated.databaseUrl } : {}),
    ...env,
  });
}

/** A whole control plane (database, broker, HTTP) on free ports, on the given backend; `logger` to inspect its log. */
export async function startTestControlPlane(
  backend: TestBackend,
  env: Record<string, string> = {},
  logger: Logger = pino({ level: process.env.FLOTILLA_TEST_LOG_LEVEL ?? 'silent' }),
): Promise<TestControlPlane> {
  const isolated = await createIsolatedDatabase(backend);
  let cp = await startControlPlane(testConfig(isolated, env), logger).catch(async (error: unknown) => {
    await isolated.dispose();
    throw error;
  });
  return {
    get cp() {
      return cp;
    },
    isolated,
    async restart() {
      await cp.close();
      cp = await startControlPlane(testConfig(isolated, env), logger);
      return cp;
    },
    async dispose() {
      await cp.close();
      await isolated.dispose();
    },
  };
}

export async function api<T = unknown>(
  cp: ControlPlane,
  path: string,
  init: { method?: string; token?: string; body?: unknown; rawBody?: string } = {},
): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(`${cp.url}${path}`, {
    method: init.method ?? (init.body !== undefined || init.rawBody !== undefined ? 'POST' : 'GET'),
    headers: {
      ...(init.body !== undefined || init.rawBody !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(init.token ? { authorization: `Bearer ${init.token}` } : {}),
    },
    body: init.rawBody ?? (init.body === undefined ? undefined : JSON.stringify(init.body)),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: body as T, headers: res.headers };
}

/** Signs in as the first-start admin; also returns the first-start gateway key. */
export async function adminLogin(cp: ControlPlane, dataDir: string): Promise<{ adminToken: string; gatewayKey: string }> {
  const creds = JSON.parse(await readFile(join(dataDir, 'initial-credentials.json'), 'utf8')) as { adminEmail: string; adminPassword: string; apiKey: string };
  const login = await api<{ token: string }>(cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: creds.adminPassword } });
  if (login.status !== 200) throw new Error(`login failed: ${login.status}`);
  return { adminToken: login.body.token, gatewayKey: creds.apiKey };
}
