import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from './support/broker.js';
import { agentDataDir, buildTestBundle, runBundledAgent, type BundledAgent } from './support/bundle.js';
import { eventually, FakeControlPlane } from './support/control-plane.js';
import { tinyModel, type TinyModel } from './support/engine.js';
import { desiredTiny } from './support/messages.js';

const DEVICE = 'dev-sigterm-01';
const accounts = { [DEVICE]: 'device-secret', 'control-plane': 'cp-secret' };

let bundle: string;
let broker: TestBroker;
let cp: FakeControlPlane;
let tiny: TinyModel;
let agent: BundledAgent | undefined;

beforeAll(async () => {
  [bundle, tiny] = await Promise.all([buildTestBundle('sigterm'), tinyModel()]);
  broker = await startBroker(accounts);
  cp = new FakeControlPlane(DEVICE, broker.url, accounts);
  await cp.connect('control-plane');
});

afterAll(async () => {
  agent?.child.kill('SIGKILL');
  await cp?.close();
  await broker?.close();
});

describe('the bundled agent as a child process', () => {
  it('drains on SIGTERM during a generation: the job ends, offline is published, exit code 0 within the grace period', async () => {
    const dataDir = agentDataDir({ deviceId: DEVICE, password: accounts[DEVICE], urls: [broker.url] });
    const graceSeconds = 2;
    agent = runBundledAgent(bundle, {
      FLOTILLA_AGENT_DATA_DIR: dataDir,
      FLOTILLA_AGENT_LOCAL_API_BIND: '127.0.0.1:0',
      FLOTILLA_AGENT_SHUTDOWN_GRACE_SECONDS: String(graceSeconds),
      FLOTILLA_AGENT_CONTEXT_SIZE: '4096',
      FLOTILLA_AGENT_LOG_LEVEL: 'warn',
    });
    const { child } = agent;

    await eventually(() => cp.all('status').find((status) => status.state === 'online'), 30_000, 'online status');
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
    const { code } = await agent.exited;
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
