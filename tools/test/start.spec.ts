import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// `npm start` as a user runs it (tools/scripts/start.mjs), on the built workspace: `npm test` builds first.
const root = fileURLToPath(new URL('../..', import.meta.url));
const startScript = join(root, 'tools/scripts/start.mjs');
const built = ['apps/control-plane/dist/main.js', 'apps/device-agent/dist/flotilla-agent.mjs', 'tools/dist/models/cli.js'];

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

interface Run {
  output: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
  kill: (signal: NodeJS.Signals) => void;
}

function runStart(env: Record<string, string>): Run {
  const child = spawn(process.execPath, [startScript], {
    cwd: root,
    env: { ...process.env, FLOTILLA_SKIP_BUILD: '1', FLOTILLA_LOG_LEVEL: 'warn', FLOTILLA_AGENT_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return {
    output: () => out,
    stderr: () => err,
    exit: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
    kill: (signal) => child.kill(signal),
  };
}

async function until(probe: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('npm start', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('has a built workspace to start (npm test builds before testing)', () => {
    expect(built.filter((f) => !existsSync(join(root, f)))).toEqual([]);
  });

  it('stops with one line naming the port and the variable when the MQTT port is taken', async () => {
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '0.0.0.0', r));
    const taken = (holder.address() as AddressInfo).port;
    const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-start-'));
    dirs.push(dataDir);
    try {
      const run = runStart({ FLOTILLA_DATA_DIR: dataDir, FLOTILLA_MQTT_PORT: String(taken), FLOTILLA_HTTP_PORT: String(await freePort()) });
      expect(await run.exit).toBe(1);
      expect(run.stderr().trim()).toBe(
        `flotilla: Port ${taken} (MQTT) is already in use: set FLOTILLA_MQTT_PORT to a free port, e.g. FLOTILLA_MQTT_PORT=${taken + 1}`,
      );
    } finally {
      await new Promise((r) => holder.close(r));
    }
  });

  it('starts the control plane and a local agent that enrolls itself and serves the tiny model through the gateway', { timeout: 180_000 }, async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-start-'));
    dirs.push(dataDir);
    const httpPort = await freePort();
    const run = runStart({
      FLOTILLA_DATA_DIR: dataDir,
      FLOTILLA_MQTT_PORT: String(await freePort()),
      FLOTILLA_HTTP_PORT: String(httpPort),
      FLOTILLA_AGENT_LOCAL_API_BIND: `127.0.0.1:${await freePort()}`,
    });
    try {
      await until(() => run.output().includes('Flotilla is running') || run.stderr().includes('flotilla:'), 120_000, 'start-up');
      expect(run.stderr()).not.toContain('flotilla:');
      expect(run.output()).toContain('gateway API key:');
      const { apiKey } = JSON.parse(readFileSync(join(dataDir, 'initial-credentials.json'), 'utf8')) as { apiKey: string };
      const base = `http://127.0.0.1:${httpPort}`;
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      // The deployment converges in the background: download (file://), verify, load, ready.
      let lastError = '';
      let answer: { choices: { message: { content: string } }[] } | undefined;
      const deadline = Date.now() + 60_000;
      while (!answer && Date.now() < deadline) {
        const res = await fetch(`${base}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'flotilla-tiny', messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 }),
        });
        if (res.status === 200) answer = (await res.json()) as typeof answer;
        else {
          lastError = await res.text();
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      expect(answer, `no answer (last: ${lastError}); start output:\n${run.output()}\n${run.stderr()}`).toBeDefined();
      expect(answer?.choices[0]?.message.content.length).toBeGreaterThan(0);
    } finally {
      run.kill('SIGINT');
      const code = await run.exit;
      expect({ code, stderr: run.stderr() }).toEqual({ code: 0, stderr: '' });
    }
  });
});
