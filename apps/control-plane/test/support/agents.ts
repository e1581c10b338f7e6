import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreatedEnrollmentTokenSchema } from '@flotilla/protocol';
import { AGENT_BUNDLE, freePort, type SimAgent } from '@flotilla/tools/sim';

/**
 * One real agent (the built bundle) enrolled against a control plane, whose enrolled broker URLs are then replaced by
 * `urls` before it first runs: an agent behind proxies that still fails over between its URLs as enrolled agents do
 * (`FLOTILLA_AGENT_MQTT_URL` would pin one URL). `startAgents` in tools/sim has no such option.
 */
export async function startAgentWithUrls(options: {
  controlPlaneUrl: string;
  adminToken: string;
  dataDir: string;
  name: string;
  urls: (enrolled: readonly string[]) => string[];
  env?: Record<string, string>;
}): Promise<SimAgent & { urls: string[] }> {
  if (!existsSync(AGENT_BUNDLE)) throw new Error(`device agent bundle not found at ${AGENT_BUNDLE}: run npx nx build @flotilla/device-agent`);
  const minted = await fetch(`${options.controlPlaneUrl}/api/v1/enrollment-tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${options.adminToken}` },
    body: JSON.stringify({ uses: 1 }),
  });
  if (!minted.ok) throw new Error(`could not mint an enrollment token: ${minted.status} ${await minted.text()}`);
  const { token } = CreatedEnrollmentTokenSchema.parse(await minted.json());
  await rm(options.dataDir, { recursive: true, force: true });
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    FLOTILLA_AGENT_DATA_DIR: options.dataDir,
    FLOTILLA_AGENT_LOCAL_API_BIND: `127.0.0.1:${port}`,
    FLOTILLA_AGENT_THREADS: '1',
    FLOTILLA_AGENT_LOG_LEVEL: 'warn',
    FLOTILLA_AGENT_SHUTDOWN_GRACE_SECONDS: '3',
    NODE_LLAMA_CPP_GPU: 'false',
    NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true',
    ...options.env,
  };
  const enrolled = await new Promise<number | null>((done, fail) => {
    const child = spawn(process.execPath, [AGENT_BUNDLE, 'enroll', '--server', options.controlPlaneUrl, '--token', token, '--name', options.name], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('error', fail);
    child.once('exit', done);
  });
  if (enrolled !== 0) throw new Error(`agent ${options.name} could not enroll (exit ${enrolled})`);
  const path = join(options.dataDir, 'credentials.json');
  const credentials = JSON.parse(await readFile(path, 'utf8')) as { deviceId: string; mqtt: { urls: string[] } };
  const urls = options.urls(credentials.mqtt.urls);
  credentials.mqtt.urls = urls;
  await writeFile(path, JSON.stringify(credentials, null, 2), { mode: 0o600 });

  const child = spawn(process.execPath, [AGENT_BUNDLE, 'run'], { env, stdio: ['ignore', 'ignore', 'ignore'] });
  const exited = new Promise<number | null>((done) => child.once('exit', (c) => done(c)));
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    name: options.name,
    deviceId: credentials.deviceId,
    dataDir: options.dataDir,
    localApiUrl: `http://127.0.0.1:${port}/v1`,
    process: child,
    exited,
    urls,
    async kill() {
      if (alive()) child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (alive()) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
