import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreatedEnrollmentTokenSchema, type CreateEnrollmentTokenRequest } from '@flotilla/protocol';

/** The built device agent (one-file bundle): `npx nx build @flotilla/device-agent`. */
export const AGENT_BUNDLE = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../apps/device-agent/dist/flotilla-agent.mjs');

export interface SimAgent {
  name: string;
  deviceId: string;
  dataDir: string;
  /** the agent's local OpenAI-compatible endpoint, e.g. http://127.0.0.1:41234/v1 */
  localApiUrl: string;
  process: ChildProcess;
  /** resolves when the process exits */
  exited: Promise<number | null>;
  /** SIGKILL: the device dies without a word (its broker connection drops, the will fires) */
  kill(): Promise<void>;
  /** SIGTERM and wait (drains) */
  stop(): Promise<void>;
}

export interface StartAgentsOptions {
  /** control plane base URL, e.g. http://127.0.0.1:8080 */
  controlPlaneUrl: string;
  /** an admin bearer (session token or admin API key) that may mint enrollment tokens */
  adminToken: string;
  count: number;
  /** folder for the agents' data directories (created) */
  baseDir: string;
  namePrefix?: string;
  bundle?: string;
  /** extra FLOTILLA_AGENT_* variables for every agent */
  env?: Record<string, string>;
  /** forward the agents' stderr (debugging) */
  inheritStderr?: boolean;
}

/**
 * A small fleet for tests and benchmarks: N real device agents as child processes of the built agent, enrolled
 * against a running control plane through its REST API (tools never import apps: processes, HTTP and MQTT only).
 */
export async function startAgents(options: StartAgentsOptions): Promise<SimAgent[]> {
  const bundle = options.bundle ?? AGENT_BUNDLE;
  if (!existsSync(bundle)) throw new Error(`device agent bundle not found at ${bundle}: run npx nx build @flotilla/device-agent`);
  const minted = await fetch(`${options.controlPlaneUrl}/api/v1/enrollment-tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${options.adminToken}` },
    body: JSON.stringify({ uses: options.count, labels: { sim: 'true' } } satisfies CreateEnrollmentTokenRequest),
  });
  if (!minted.ok) throw new Error(`could not mint an enrollment token: ${minted.status} ${await minted.text()}`);
  const { token } = CreatedEnrollmentTokenSchema.parse(await minted.json());
  await mkdir(options.baseDir, { recursive: true });
  return Promise.all(
    Array.from({ length: options.count }, async (_, i) => {
      const name = `${options.namePrefix ?? 'sim'}-${i + 1}`;
      const dataDir = join(options.baseDir, name);
      await rm(dataDir, { recursive: true, force: true });
      const port = await freePort();
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        FLOTILLA_AGENT_DATA_DIR: dataDir,
        FLOTILLA_AGENT_LOCAL_API_BIND: `127.0.0.1:${port}`,
        FLOTILLA_AGENT_THREADS: '1',
        FLOTILLA_AGENT_LOG_LEVEL: 'warn',
        FLOTILLA_AGENT_SHUTDOWN_GRACE_SECONDS: '3',
        NODE_LLAMA_CPP_GPU: 'false',
        NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true',
        ...options.env,
      };
      const code = await run(bundle, ['enroll', '--server', options.controlPlaneUrl, '--token', token, '--name', name], env);
      if (code !== 0) throw new Error(`agent ${name} could not enroll (exit ${code})`);
      const credentials = JSON.parse(await readFile(join(dataDir, 'credentials.json'), 'utf8')) as { deviceId: string };
      const child = spawn(process.execPath, [bundle, 'run'], { env, stdio: ['ignore', 'ignore', options.inheritStderr ? 'inherit' : 'ignore'] });
      const exited = new Promise<number | null>((done) => child.once('exit', (c) => done(c)));
      return {
        name,
        deviceId: credentials.deviceId,
        dataDir,
        localApiUrl: `http://127.0.0.1:${port}/v1`,
        process: child,
        exited,
        async kill() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await exited;
        },
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(timer);
        },
      } satisfies SimAgent;
    }),
  );
}

/** Stops every agent (SIGTERM, then SIGKILL after 10 s). */
export async function stopAgents(agents: readonly SimAgent[]): Promise<void> {
  await Promise.all(agents.map((a) => a.stop()));
}

function run(bundle: string, args: string[], env: NodeJS.ProcessEnv): Promise<number | null> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [bundle, ...args], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', fail);
    child.once('exit', (code) => done(code));
  });
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}
