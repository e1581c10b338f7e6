import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBroker, type TestBroker } from './support/broker.js';
import { agentDataDir, buildTestBundle, deadMqttUrl, freePort, runBundledAgent, type BundledAgent } from './support/bundle.js';
import { eventually, FakeControlPlane } from './support/control-plane.js';
import { tinyModel, type TinyModel } from './support/engine.js';
import { startFileServer, type FileServer } from './support/file-server.js';
import { desiredTiny, inferenceRequest } from './support/messages.js';

// Issue 8 #1: the bundle resolved `ws` with the `import` condition, so mqtt.js's require("ws") got ws's ESM wrapper
// and the first ws:// connect threw (createWebSocketStream is not a function). The sources never showed it: only
// the built bundle, as deployed, falling back to its ws:// broker URL does.
const DEVICE = 'dev-bundle-ws-01';
const accounts = { [DEVICE]: 'device-secret', 'control-plane': 'cp-secret' };

let bundle: string;
let broker: TestBroker;
let files: FileServer;
let cp: FakeControlPlane;
let tiny: TinyModel;
let agent: BundledAgent | undefined;

beforeAll(async () => {
  [bundle, tiny] = await Promise.all([buildTestBundle('ws-failover'), tinyModel()]);
  broker = await startBroker(accounts, { websocket: true, controlPlaneClientId: 'control-plane' });
  files = await startFileServer({ '/models/tiny.gguf': { body: readFileSync(tiny.path) } });
  cp = new FakeControlPlane(DEVICE, broker.url, accounts);
  await cp.connect('control-plane');
});

afterAll(async () => {
  if (agent?.running()) {
    agent.child.kill('SIGKILL');
    await agent.exited;
  }
  await cp?.close();
  await files?.close();
  await broker?.close();
});

describe('the bundled agent falling back to its ws:// broker URL', () => {
  it('skips a dead first URL, connects over ws://.../mqtt and serves over MQTT and locally', { timeout: 90_000 }, async () => {
    const wsUrl = broker.wsUrl as string;
    const dataDir = agentDataDir({ deviceId: DEVICE, password: accounts[DEVICE], urls: [await deadMqttUrl(), wsUrl] });
    const localPort = await freePort();
    agent = runBundledAgent(bundle, {
      FLOTILLA_AGENT_DATA_DIR: dataDir,
      FLOTILLA_AGENT_LOCAL_API_BIND: `127.0.0.1:${localPort}`,
      FLOTILLA_AGENT_CONTEXT_SIZE: '1024',
      FLOTILLA_AGENT_LOG_LEVEL: 'info',
    });
    const running = agent;
    // Waits for a condition, failing at once with the agent's last output when the process died meanwhile.
    const awaitRunning = <T>(probe: () => T | undefined | false, timeoutMs: number, what: string): Promise<T> =>
      eventually(() => {
        if (!running.running()) throw new Error(`the agent exited while waiting for ${what}:\n${running.output().slice(-1500)}`);
        return probe();
      }, timeoutMs, what);

    // The dead URL fails failoverAfterAttempts (3) times, then the ws:// URL is the only way in.
    const online = await awaitRunning(() => cp.all('status').find((status) => status.state === 'online'), 30_000, 'online status');
    expect(online.reason).toBe('startup');
    expect(running.output()).toContain(`"url":"${wsUrl}"`);

    cp.publish('desired', desiredTiny(tiny, { url: files.url('/models/tiny.gguf'), contextSize: 1024, parallel: 1, maxParallelRequests: 1, maxQueueLength: 4 }), true);
    await awaitRunning(() => cp.all('modelState').some((report) => report.models.some((model) => model.state === 'ready' && model.loaded)), 30_000, 'model ready');

    // A job over the WebSocket link, answered over it.
    cp.publish('inferenceRequest', inferenceRequest({ requestId: 'ws-1', stream: true, maxTokens: 8 }));
    const result = await awaitRunning(() => cp.all('inferenceResponse').find((response) => response.requestId === 'ws-1' && response.type !== 'chunk'), 20_000, 'result');
    expect(result).toMatchObject({ type: 'result', usage: { completionTokens: 8 } });

    // And the local endpoint answers.
    const local = await fetch(`http://127.0.0.1:${localPort}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'over ws?' }], max_tokens: 4 }),
    });
    expect(local.status).toBe(200);
    expect(((await local.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(4);

    expect(running.running()).toBe(true);
    expect(running.output()).not.toMatch(/TypeError/);
  });
});
