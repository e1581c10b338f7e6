import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from './support/broker.js';
import { eventually, FakeControlPlane } from './support/control-plane.js';
import { tinyModel, type TinyModel } from './support/engine.js';
import { desiredTiny } from './support/messages.js';

const DEVICE = 'dev-sigterm-01';
const accounts = { [DEVICE]: 'device-secret', 'control-plane': 'cp-secret' };
const projectDir = join(dirname(fileURLToPath(import.meta.url)), '..');
// Inside the repository so the bundle finds node-llama-cpp (kept external) in node_modules.
const bundleDir = join(projectDir, '.flotilla', 'test-dist');

let broker: TestBroker;
let cp: FakeControlPlane;
let tiny: TinyModel;
let child: ChildProcess | undefined;

beforeAll(async () => {
  await promisify(execFile)(process.execPath, [join(projectDir, 'build.mjs'), bundleDir]);
  tiny = await tinyModel();
  broker = await startBroker(accounts);
  cp = new FakeControlPlane(DEVICE, broker.url, accounts);
  await cp.connect('control-plane');
});

afterAll(async () => {
  child?.kill('SIGKILL');
  await cp?.close();
  await broker?.close();
});

describe('the bundled agent as a child process', () => {
  it('drains on SIGTERM during a generation: the job ends, offline is published, exit code 0 within the grace period', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'flotilla-sigterm-'));
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, 'credentials.json'), JSON.stringify({ deviceId: DEVICE, mqtt: { username: DEVICE, password: accounts[DEVICE], urls: [broker.url] } }), { mode: 0o600 });
    const graceSeconds = 2;
    child = spawn(process.execPath, [join(bundleDir, 'flotilla-agent.mjs'), 'run'], {
      env: {
        PATH: process.env['PATH'] ?? '',
        NODE_LLAMA_CPP_GPU: 'false',
        FLOTILLA_AGENT_DATA_DIR: dataDir,
        FLOTILLA_AGENT_LOCAL_API_BIND: '127.0.0.1:0',
        FLOTILLA_AGENT_SHUTDOWN_GRACE_SECONDS: String(graceSeconds),
        FLOTILLA_AGENT_CONTEXT_SIZE: '4096',
        FLOTILLA_AGENT_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child?.on('exit', (code) => resolve(code)));

    await eventually(() => cp.all('status').find((status) => status.state === 'online'), 30_000, `online status (agent output: ${output})`);
    cp.publish('desired', desiredTiny(tiny, { contextSize: 4096, parallel: 1, maxParallelRequests: 1, maxQueueLength: 4 }), true);
    await eventually(() => cp.all('modelState').find((report) => report.models.some((model) => model.state === 'ready')), 30_000, 'model ready');
    cp.publish('inferenceRequest', {
      v: 1,
      requestId: 'long-1',
      attempt: 1,
      model: 'tiny',
      messages: [{ role: 'user', content: 'Tell me a long story' }],
      priority: 5,
      sentAt: Date.now(),
      deadline: Date.now() + 60_000,
      stream: true,
      maxTokens: 4000,
    });
    await eventually(() => cp.all('inferenceResponse').some((response) => response.requestId === 'long-1'), 10_000, 'first chunk');

    const signalledAt = Date.now();
    child.kill('SIGTERM');
    const code = await exited;
    const took = Date.now() - signalledAt;
    expect(code).toBe(0);
    expect(took).toBeLessThan(graceSeconds * 1000 + 1500);
    const final = cp.all('inferenceResponse').find((response) => response.requestId === 'long-1' && response.type !== 'chunk');
    expect(final).toMatchObject({ type: 'error', code: 'DEVICE_DRAINING', retryable: true });
    const states = cp.all('status').map((status) => status.state);
    expect(states).toContain('draining');
    expect(cp.all('status').at(-1)).toMatchObject({ state: 'offline', reason: 'shutdown' });
  });
});
