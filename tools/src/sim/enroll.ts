import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import {
  CreatedEnrollmentTokenSchema,
  ENROLL_PATH,
  EnrollResponseSchema,
  type CreateEnrollmentTokenRequest,
  type EnrollRequest,
} from '@flotilla/protocol';

/** What a simulated device keeps after enrolling (the agent's credentials.json, plus its name). */
export interface SimCredentials {
  name: string;
  deviceId: string;
  username: string;
  password: string;
  urls: string[];
}

/** Mints enrollment tokens with an admin bearer, 10,000 uses at most per token (the API's limit). */
export async function mintEnrollmentTokens(controlPlaneUrl: string, adminToken: string, uses: number, labels: Record<string, string> = {}): Promise<string[]> {
  const tokens: string[] = [];
  for (let left = uses; left > 0; left -= 10_000) {
    const res = await fetch(`${controlPlaneUrl}/api/v1/enrollment-tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
      body: JSON.stringify({ uses: Math.min(left, 10_000), labels } satisfies CreateEnrollmentTokenRequest),
    });
    if (!res.ok) throw new Error(`could not mint an enrollment token: ${res.status} ${await res.text()}`);
    tokens.push(CreatedEnrollmentTokenSchema.parse(await res.json()).token);
  }
  return tokens;
}

/** node:http agents per source address (keep-alive), so enrollment comes from the device's own address. */
const agents = new Map<string, Agent>();

function agentFor(localAddress: string | undefined): Agent | undefined {
  if (!localAddress) return undefined;
  let agent = agents.get(localAddress);
  if (!agent) {
    agent = new Agent({ keepAlive: true, maxSockets: 4, localAddress });
    agents.set(localAddress, agent);
  }
  return agent;
}

/** Closes the keep-alive sockets of enrollment. */
export function closeEnrollmentAgents(): void {
  for (const agent of agents.values()) agent.destroy();
  agents.clear();
}

export class EnrollError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'EnrollError';
  }
}

/** `POST /api/v1/enroll` from `localAddress` (the device's source address), parsed with the protocol schema. */
export function enrollDevice(controlPlaneUrl: string, body: EnrollRequest & { name: string }, localAddress?: string): Promise<SimCredentials> {
  const url = new URL(ENROLL_PATH, controlPlaneUrl);
  const payload = JSON.stringify(body satisfies EnrollRequest);
  const agent = agentFor(localAddress);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        ...(agent ? { agent } : {}),
        ...(localAddress && !agent ? { localAddress } : {}),
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) return reject(new EnrollError(`enroll ${body.name}: ${status} ${text.slice(0, 300)}`, status));
          try {
            const parsed = EnrollResponseSchema.parse(JSON.parse(text));
            resolve({ name: body.name, deviceId: parsed.deviceId, username: parsed.mqtt.username, password: parsed.mqtt.password, urls: parsed.mqtt.urls });
          } catch (error) {
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}



/** The credentials file a fleet re-joins from without enrolling again. */
export interface CredentialsFile {
  version: 1;
  controlPlaneUrl: string;
  devices: SimCredentials[];
}

export async function loadCredentials(path: string): Promise<CredentialsFile | undefined> {
  if (!existsSync(path)) return undefined;
  const file = JSON.parse(await readFile(path, 'utf8')) as CredentialsFile;
  if (file.version !== 1 || !Array.isArray(file.devices)) throw new Error(`${path} is not a flotilla-sim credentials file`);
  return file;
}

export async function saveCredentials(path: string, file: CredentialsFile): Promise<void> {
  await writeFile(`${path}.tmp`, JSON.stringify(file), { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}
