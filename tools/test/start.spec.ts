import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

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

/** The test's environment minus any port variable of the caller's shell: each test sets exactly the ones it means. */
function baseEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ['FLOTILLA_HTTP_PORT', 'FLOTILLA_MQTT_PORT', 'FLOTILLA_MQTT_TLS_PORT', 'FLOTILLA_DATA_DIR']) delete env[name];
  return env;
}

function runStart(env: Record<string, string>): Run {
  const child = spawn(process.execPath, [startScript], {
    cwd: root,
    env: { ...baseEnv(), FLOTILLA_SKIP_BUILD: '1', FLOTILLA_LOG_LEVEL: 'warn', FLOTILLA_AGENT_LOG_LEVEL: 'warn', ...env },
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

  it('with the default MQTT port taken and no variable, moves to the next free port, says so in one line, keeps it on the next start, and stops with one line when it is taken later', { timeout: 420_000 }, async () => {
    // The default must be taken: hold 1883 ourselves, unless another process (this machine's Mosquitto) already does.
    const defaultHolder = createServer();
    const heldByUs = await new Promise<boolean>((resolve) => {
      defaultHolder.once('error', () => resolve(false));
      defaultHolder.listen(1883, '0.0.0.0', () => resolve(true));
    });
    const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-start-'));
    dirs.push(dataDir);
    const env = { FLOTILLA_DATA_DIR: dataDir, FLOTILLA_HTTP_PORT: String(await freePort()), FLOTILLA_AGENT_LOCAL_API_BIND: `127.0.0.1:${await freePort()}` };
    try {
      const first = runStart(env);
      let moved: number;
      try {
        await until(() => first.output().includes('Flotilla is running') || first.stderr().includes('flotilla:'), 240_000, 'the first start');
        expect(first.stderr()).toBe('');
        const announced = first.output().split('\n').filter((line) => line.includes('(MQTT) is taken'));
        expect(announced).toHaveLength(1);
        const match = /^flotilla: Port 1883 \(MQTT\) is taken by another process: using (\d+) instead, recorded in (.+)\/ports\.json for later starts and enrolled devices \(set FLOTILLA_MQTT_PORT to choose\)$/.exec(announced[0] ?? '');
        expect(match, announced[0]).not.toBeNull();
        moved = Number(match?.[1]);
        expect(moved).toBeGreaterThan(1883);
        expect(JSON.parse(readFileSync(join(dataDir, 'ports.json'), 'utf8'))).toEqual({ mqtt: moved });
      } finally {
        first.kill('SIGINT');
        await first.exit;
      }
      expect(await first.exit, first.stderr()).toBe(0);

      // Second start: the same port, no new announcement, and the agent enrolled on it reconnects (the gateway answers).
      const second = runStart(env);
      try {
        await until(() => second.output().includes('Flotilla is running') || second.stderr().includes('flotilla:'), 240_000, 'the second start');
        expect(second.stderr()).toBe('');
        expect(second.output()).not.toContain('is taken');
        expect(second.output()).toContain(`MQTT on port ${moved}`);
      } finally {
        second.kill('SIGINT');
        await second.exit;
      }
      expect(await second.exit, second.stderr()).toBe(0);

      // Third start with the recorded port held by another process: it must not move away from the enrolled devices.
      const holder = createServer();
      await new Promise<void>((r) => holder.listen(moved, '0.0.0.0', r));
      try {
        const third = runStart(env);
        expect(await third.exit).toBe(1);
        expect(third.stderr().trim()).toBe(
          `flotilla: Port ${moved} (MQTT) is already in use, and it cannot move: this data directory's devices are enrolled on it ` +
            `(recorded in ${join(dataDir, 'ports.json')}); stop the process that holds it, or set FLOTILLA_MQTT_PORT and enroll the devices again`,
        );
      } finally {
        await new Promise((r) => holder.close(r));
      }
    } finally {
      if (heldByUs) await new Promise((r) => defaultHolder.close(r));
    }
  });

  describe('a started system', () => {
    let run: Run | undefined;
    let dataDir = '';
    let base = '';
    beforeAll(async () => {
      dataDir = await mkdtemp(join(tmpdir(), 'flotilla-start-'));
      dirs.push(dataDir);
      const httpPort = await freePort();
      base = `http://127.0.0.1:${httpPort}`;
      run = runStart({
        FLOTILLA_DATA_DIR: dataDir,
        FLOTILLA_MQTT_PORT: String(await freePort()),
        FLOTILLA_HTTP_PORT: String(httpPort),
        FLOTILLA_AGENT_LOCAL_API_BIND: `127.0.0.1:${await freePort()}`,
      });
      const started = run;
      await until(() => started.output().includes('Flotilla is running') || started.stderr().includes('flotilla:'), 240_000, 'start-up');
    }, 300_000);
    afterAll(async () => {
      if (!run) return;
      run.kill('SIGINT');
      const code = await run.exit;
      expect({ code, stderr: run.stderr() }).toEqual({ code: 0, stderr: '' });
    }, 30_000);

    it('says it is running only once the local model answers, with the dashboard and gateway URLs and a first request', async () => {
      const started = run as Run;
      expect(started.stderr()).not.toContain('flotilla:');
      expect(started.output()).toContain('gateway API key:');
      const output = started.output();
      expect(output).toContain(`dashboard (a placeholder for now) and REST API:  ${base}`);
      expect(output).toContain(`OpenAI-compatible gateway:                       ${base}/v1`);
      expect(output).toContain(`    KEY=$(node -p "require('${join(dataDir, 'initial-credentials.json')}').apiKey")`);
      expect(output).toContain(`    curl -s ${base}/v1/chat/completions -H "authorization: Bearer $KEY"`);
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      // No waiting: "running" was said after a gateway request was answered, so the printed request works at once.
      const pasted = output.split('\n').filter((line) => line.startsWith('    KEY=') || line.startsWith('    curl '));
      const answer = shell(pasted.join('\n'), {});
      expect(answer.status, answer.stderr).toBe(0);
      const body = JSON.parse(answer.stdout) as { choices?: { message: { content: string } }[]; error?: unknown };
      expect(body, answer.stdout).toHaveProperty(['choices', 0, 'message', 'content']);
      expect(body.choices?.[0]?.message.content).not.toBe('');
    });

    it("answers the README's first request, run as written (the data directory and port are this test's)", () => {
      const block = readmeBlock('A first request');
      const result = shell(asOnThisSystem(block, dataDir, base), {});
      expect(result.status, result.stderr).toBe(0);
      const body = JSON.parse(result.stdout) as { choices?: { message: { content: string } }[] };
      expect(body, result.stdout).toHaveProperty(['choices', 0, 'message', 'content']);
      expect(body.choices?.[0]?.message.content).not.toBe('');
    });

    it("runs the README's CLI block as written: the local flotilla CLI, a dry run of examples/fleet/single-device.yaml", () => {
      const block = readmeBlock('Fleet files and the CLI');
      expect(block).toContain('examples/fleet/single-device.yaml');
      // FLOTILLA_SERVER: the CLI's own variable for where the control plane is (the README relies on the default).
      const result = shell(asOnThisSystem(block, dataDir, base), { FLOTILLA_SERVER: base });
      expect(result.status, `${result.stdout}\n${result.stderr}`).toBe(0);
      expect(result.stdout).toContain('dry run, nothing changed');
      expect(result.stdout).toContain('+ model qwen2.5-0.5b-instruct-q4_k_m');
      expect(result.stdout).toContain('+ deployment small');
    });
  });
});

/** The first ```sh block under the README heading `## <heading>`: the test breaks when the README's command does. */
function readmeBlock(heading: string): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const start = readme.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  const section = readme.slice(start + 1).split(/\n## /)[0] ?? '';
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1];
  if (!block) throw new Error(`README.md's "## ${heading}" section has no sh block`);
  return block;
}

/** The README speaks of ./.flotilla and port 8080; this test's system has its own data directory and port. */
function asOnThisSystem(block: string, dataDir: string, base: string): string {
  return block.replaceAll('./.flotilla/', `${dataDir}/`).replaceAll('http://127.0.0.1:8080', base);
}

/** Runs a block with bash in the repository root, stopping at the first failing command. */
function shell(script: string, env: Record<string, string>): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync('bash', ['-e', '-o', 'pipefail', '-c', script], {
    cwd: root,
    env: { ...baseEnv(), ...env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
