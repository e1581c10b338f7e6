import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MosquittoProcess } from '../src/sim/mosquitto.js';
import type { SimFleetStats } from '../src/sim/sim-fleet.js';

// flotilla-sim as a built process (tools/dist/sim/cli.js): bad flags, and a scripted run against a plain Mosquitto.
const CLI = fileURLToPath(new URL('../dist/sim/cli.js', import.meta.url));

function run(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let mosquitto: MosquittoProcess;
beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build @flotilla/tools first`);
  mosquitto = await MosquittoProcess.start();
});
afterAll(async () => {
  await mosquitto?.stop();
});

describe('flotilla-sim CLI (built)', () => {
  it('prints help', async () => {
    const { code, stdout } = await run(['--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/Usage: flotilla-sim/);
  });

  it.each([
    [['--devices', '10'], /--cp URL is required/],
    [['--cp', 'http://127.0.0.1:1'], /--admin-token .* is required/],
    [['--cp', 'nope', '--admin-token', 't'], /--cp must be a URL/],
    [['--plain'], /--plain needs --mqtt/],
    [['--plain', '--mqtt', 'mqtt://127.0.0.1:1', '--devices', 'ten'], /--devices must be an integer/],
    [['--plain', '--mqtt', 'mqtt://127.0.0.1:1', '--script', 'join 5; explode 3'], /unknown verb "explode"/],
    [['--plain', '--mqtt', 'mqtt://127.0.0.1:1', '--script', 'wait soon'], /bad duration "soon"/],
    [['--plain', '--mqtt', 'mqtt://127.0.0.1:1', '--script', 'cut 3'], /cut needs --proxy/],
    [['--plain', '--mqtt', 'mqtt://127.0.0.1:1', '--bogus'], /Unknown option '--bogus'/],
  ])('refuses %j with a clear message and exit code 2', async (args, message) => {
    const { code, stderr, stdout } = await run(args);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    expect(code).toBe(2);
  });

  it('runs a script against a plain broker with a summary line every second', async () => {
    const { code, stdout, stderr } = await run([
      '--plain',
      '--mqtt',
      mosquitto.url,
      '--telemetry-interval',
      '0.5',
      '--devices-per-address',
      '10',
      '--json',
      '--script',
      'join 50; wait 2s; crash 5; silence 5; wait 1500ms',
    ]);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines.some((line) => /^joined 50 devices in \d+ ms$/.test(line))).toBe(true);
    expect(lines).toContain('crashed 5');
    expect(lines).toContain('silenced 5');
    expect(lines.filter((line) => line.startsWith('devices 50 | connected')).length).toBeGreaterThanOrEqual(3);
    const final = JSON.parse(lines[lines.length - 1] as string) as SimFleetStats;
    expect(final).toMatchObject({ devices: 50, crashed: 5, silenced: 5, connected: 40 });
    expect(final.counters.failedConnects).toBe(0);
    expect(final.counters.entriesSent).toBeGreaterThanOrEqual(150);
  });
});
