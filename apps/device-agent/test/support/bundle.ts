import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const projectDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Builds the agent bundle with the project's own build.mjs, into a folder per suite (suites run in parallel and each
 * build clears its folder). Inside the repository so the bundle finds node-llama-cpp (kept external) in node_modules.
 */
export async function buildTestBundle(suite: string): Promise<string> {
  const outDir = join(projectDir, '.flotilla', `test-dist-${suite}`);
  await promisify(execFile)(process.execPath, [join(projectDir, 'build.mjs'), outDir]);
  return join(outDir, 'flotilla-agent.mjs');
}

/** A data directory holding the credentials enrollment would have written. */
export function agentDataDir(device: { deviceId: string; password: string; urls: readonly string[] }): string {
  const dataDir = mkdtempSync(join(tmpdir(), 'flotilla-bundle-'));
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, 'credentials.json'), JSON.stringify({ deviceId: device.deviceId, mqtt: { username: device.deviceId, password: device.password, urls: device.urls } }), {
    mode: 0o600,
  });
  return dataDir;
}

export type BundledAgent = {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running: () => boolean;
};

/** `flotilla-agent run` from the bundle as a child process, with only the given FLOTILLA_AGENT_* settings. */
export function runBundledAgent(bundle: string, env: Record<string, string>): BundledAgent {
  const child = spawn(process.execPath, [bundle, 'run'], {
    env: { PATH: process.env['PATH'] ?? '', NODE_LLAMA_CPP_GPU: 'false', NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => output, exited, running: () => child.exitCode === null && child.signalCode === null };
}

/** A loopback port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** An mqtt:// URL on which nothing listens: every connection attempt is refused. */
export async function deadMqttUrl(): Promise<string> {
  return `mqtt://127.0.0.1:${await freePort()}`;
}
