import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode, topicFor, type InferenceRequest, type MessageOf } from '@flotilla/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../src/agent.js';
import { loadConfig } from '../src/config/config.js';
import { startBroker, type TestBroker } from './support/broker.js';
import { eventually, FakeControlPlane } from './support/control-plane.js';
import { tinyModel, type TinyModel } from './support/engine.js';
import { desiredTiny, inferenceRequest } from './support/messages.js';
import { testLogger } from './support/silent-logger.js';

// [P-3.6] A request is judged on the control plane's clock, whose offset the agent learns from the ack answering each
// hello: here the control plane's clock runs an hour ahead of the device's, as an edge box without NTP might.
const DEVICE = 'dev-stale-01';
const CP = 'cp-stale';
const accounts = { [DEVICE]: 'device-secret', [CP]: 'cp-secret' };
const SKEW_MS = 3_600_000;
const HELLO_ANSWER_TIMEOUT_S = 1.5;

let broker: TestBroker;
let cp: FakeControlPlane;
let agent: Agent;
let tiny: TinyModel;

const responsesFor = (requestId: string): MessageOf<'inferenceResponse'>[] => cp.all('inferenceResponse').filter((r) => r.requestId === requestId);
const terminalFor = (requestId: string) => responsesFor(requestId).find((r) => r.type !== 'chunk');
const usageFor = (requestId: string) => cp.all('usage').filter((u) => u.requestId === requestId);

/** A job as the control plane sends it: its own clock in `sentAt` and `deadline`. */
function job(requestId: string, sentAgoMs: number, budgetMs: number): InferenceRequest {
  const sentAt = cp.now() - sentAgoMs;
  return inferenceRequest({ requestId, sentAt, deadline: sentAt + budgetMs, maxTokens: 4 });
}

beforeAll(async () => {
  tiny = await tinyModel();
  broker = await startBroker(accounts, { controlPlaneClientId: CP });
  cp = new FakeControlPlane(DEVICE, broker.url, accounts);
  cp.clockSkewMs = SKEW_MS;
  await cp.connect(CP);
  const config = loadConfig({
    env: {
      FLOTILLA_AGENT_DATA_DIR: mkdtempSync(join(tmpdir(), 'flotilla-stale-')),
      FLOTILLA_AGENT_LOCAL_API_ENABLED: 'false',
      FLOTILLA_AGENT_CONTEXT_SIZE: '1024',
      FLOTILLA_AGENT_TELEMETRY_INTERVAL_SECONDS: '0.5',
    },
  });
  config.mqtt.reconnectMinMs = 100;
  config.mqtt.reconnectMaxMs = 300;
  config.mqtt.helloAnswerTimeoutSeconds = HELLO_ANSWER_TIMEOUT_S;
  agent = await Agent.create({ config, credentials: { deviceId: DEVICE, username: DEVICE, password: accounts[DEVICE], urls: [broker.url] }, logger: testLogger() });
  await agent.start();
  await eventually(() => cp.all('status').find((s) => s.state === 'online'), 20_000, 'online');
  cp.publish('desired', desiredTiny(tiny, { contextSize: 1024, parallel: 2, maxParallelRequests: 2, maxQueueLength: 10 }), true);
  await eventually(() => cp.all('modelState').find((r) => r.models.some((m) => m.state === 'ready' && m.loaded)), 30_000, 'model ready');
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  await cp?.close();
  await broker?.close();
});

describe('[P-3.6] stale requests are never run', () => {
  it("checks the deadline against the control plane's clock, not a fresh budget from receipt", async () => {
    // Sent 1.5 s ago (delayed on the way) with a 1.4 s budget: already past its deadline when it arrives.
    cp.publish('inferenceRequest', job('late-1', 1500, 1400));
    // Sent now with a 30 s budget, on a clock an hour ahead of the device's: runs.
    cp.publish('inferenceRequest', job('fresh-1', 0, 30_000));
    const fresh = await eventually(() => terminalFor('fresh-1'), 20_000, 'the fresh request to finish');
    expect(fresh).toMatchObject({ type: 'result', attempt: 1 });
    const late = await eventually(() => terminalFor('late-1'), 20_000, 'an answer for the late request');
    expect(late).toMatchObject({ type: 'error', code: 'DEADLINE_EXCEEDED', attempt: 1 });
    expect(responsesFor('late-1')).toHaveLength(1); // no chunk: it never ran
    await eventually(() => usageFor('fresh-1').length > 0, 10_000, 'usage of the fresh request');
    expect(usageFor('late-1')).toEqual([]);
  });

  it('drops a request the persistent session held while the link was down, with a full budget left; serves new ones', async () => {
    const hellos = cp.all('hello').length;
    const gone = new Promise<void>((resolve) => {
      const onDisconnect = (client: { id: string }): void => {
        if (client.id !== DEVICE) return;
        broker.aedes.off('clientDisconnect', onDisconnect);
        resolve();
      };
      broker.aedes.on('clientDisconnect', onDisconnect);
    });
    await broker.down(); // the link drops; the broker keeps the device's session and its subscriptions
    await gone;
    // The gateway sends a job meanwhile (it does not know yet): the broker queues it in the session.
    const queued = job('queued-1', 0, 60_000);
    await new Promise<void>((resolve, reject) =>
      broker.aedes.publish({ cmd: 'publish', topic: topicFor('inferenceRequest', DEVICE), payload: Buffer.from(encode('inferenceRequest', queued)), qos: 1, retain: false, dup: false }, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await broker.up();
    await eventually(() => cp.all('hello').length > hellos, 20_000, 'a new hello');
    const answer = await eventually(() => terminalFor('queued-1'), 20_000, 'an answer for the queued request');
    expect(answer).toMatchObject({ type: 'error', code: 'DEVICE_OFFLINE', attempt: 1, retryable: true });
    expect(responsesFor('queued-1')).toHaveLength(1);
    // A job sent on the new connection runs.
    cp.publish('inferenceRequest', job('after-1', 0, 30_000));
    expect(await eventually(() => terminalFor('after-1'), 20_000, 'the new request to finish')).toMatchObject({ type: 'result' });
    await eventually(() => usageFor('after-1').length > 0, 10_000, 'usage of the new request');
    expect(usageFor('queued-1')).toEqual([]);
  });

  it('runs jobs with a budget from their arrival when the control plane never answers the hello (an older one)', async () => {
    cp.answerHello = false;
    try {
      const hellos = cp.all('hello').length;
      await broker.down();
      await broker.up();
      await eventually(() => cp.all('hello').length > hellos, 20_000, 'a new hello');
      const helloAt = Date.now();
      // Its clock is unknown now: the job waits for the hello answer, then runs on its relative budget.
      cp.publish('inferenceRequest', job('unsynced-1', 0, 30_000));
      const answer = await eventually(() => terminalFor('unsynced-1'), 20_000, 'the job to run after the hello answer timeout');
      expect(answer).toMatchObject({ type: 'result', attempt: 1 });
      expect(Date.now() - helloAt).toBeGreaterThanOrEqual(HELLO_ANSWER_TIMEOUT_S * 1000 - 200);
      // Later jobs on this connection run at once.
      const sentAt = Date.now();
      cp.publish('inferenceRequest', job('unsynced-2', 0, 30_000));
      expect(await eventually(() => terminalFor('unsynced-2'), 20_000, 'the next job')).toMatchObject({ type: 'result' });
      expect(Date.now() - sentAt).toBeLessThan(HELLO_ANSWER_TIMEOUT_S * 1000);
    } finally {
      cp.answerHello = true;
    }
  });
});
