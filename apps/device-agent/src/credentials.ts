import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EnrollResponseSchema, ENROLL_PATH, type EnrollRequest } from '@flotilla/protocol';
import { z } from 'zod';
import type { Credentials } from './link/mqtt-link.js';

const CredentialsFileSchema = z.object({
  deviceId: z.string().min(1),
  server: z.string().optional(),
  mqtt: z.object({ username: z.string().min(1), password: z.string().min(1), urls: z.array(z.string()).min(1) }),
});

export function credentialsPath(dataDir: string): string {
  return join(dataDir, 'credentials.json');
}

/** Reads the credentials `enroll` stored; a clear error when the device is not enrolled. */
export async function readCredentials(dataDir: string): Promise<Credentials> {
  const path = credentialsPath(dataDir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new Error(`not enrolled: ${path} does not exist (run: flotilla-agent enroll --server URL --token TOKEN)`);
  }
  const parsed = CredentialsFileSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${path} is damaged: ${parsed.error.issues[0]?.message ?? 'invalid'}; enroll again`);
  return { deviceId: parsed.data.deviceId, username: parsed.data.mqtt.username, password: parsed.data.mqtt.password, urls: parsed.data.mqtt.urls };
}

export type EnrollOptions = { server: string; token: string; dataDir: string; request?: Omit<EnrollRequest, 'token'> };

/** Exchanges a one-time enrollment token for the device's own credentials and stores them with mode 0600. */
export async function enroll(options: EnrollOptions): Promise<Credentials> {
  const url = new URL(ENROLL_PATH, options.server);
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...options.request, token: options.token }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new Error(`cannot reach ${url.origin}: ${error instanceof Error ? error.message : String(error)}`);
  }
  const text = await response.text();
  if (!response.ok) {
    let detail = text.slice(0, 300);
    try {
      const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
      if (body.error?.message) detail = `${body.error.code ?? ''} ${body.error.message}`.trim();
    } catch {
      // not JSON: keep the raw text
    }
    throw new Error(`enrollment refused (HTTP ${response.status}): ${detail}`);
  }
  const parsed = EnrollResponseSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`unexpected enrollment answer: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const { deviceId, mqtt } = parsed.data;
  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  const path = credentialsPath(options.dataDir);
  const tmp = `${path}.tmp`;
  await writeFile(tmp, JSON.stringify({ deviceId, server: options.server, mqtt }, null, 2), { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
  return { deviceId, username: mqtt.username, password: mqtt.password, urls: mqtt.urls };
}
