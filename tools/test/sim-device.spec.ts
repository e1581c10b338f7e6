import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Aedes } from 'aedes';
import { connect, type MqttClient } from 'mqtt';
import { decodeTopic, encode, topicFor, type MessageOf, type TopicKind, type TopicMessage } from '@flotilla/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { saveCredentials } from '../src/sim/enroll.js';
import { startSimFleet, type SimFleet } from '../src/sim/sim-fleet.js';
import { makeTempDir } from './support/temp-dir.js';
import { waitFor } from './support/wait.js';

// The device logic against a real broker (aedes) and a test client standing in for the control plane: outbox seqs,
// prevSeq, resends (timer, reconnect, `resend: true`), acks; desired state to ready or failed; synthetic inference
// with chunks, result, errors and cancel. Credentials come from a credentials file (no enrollment).

let broker: Aedes;
let server: Server;
let port: number;
let cpSide: MqttClient;
let dir: string;
let cleanup: () => Promise<void>;
let fleet: SimFleet | undefined;
const seen: TopicMessage[] = [];
const DEVICE = 'dev-unit-1';

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('sim-device'));
  broker = await Aedes.createBroker();
  server = createServer({ noDelay: true }, broker.handle);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  port = typeof address === 'object' && address ? address.port : 0;
  cpSide = connect(`mqtt://127.0.0.1:${port}`, { clientId: 'cp-side' });
  await new Promise<void>((done) => cpSide.once('connect', () => done()));
  await cpSide.subscribeAsync('flotilla/v1/devices/+/#', { qos: 1 });
  cpSide.on('message', (topic, payload) => {
    const decoded = decodeTopic(topic, payload);
    if (decoded.ok && decoded.value.deviceId === DEVICE) seen.push(decoded.value);
  });
  await saveCredentials(join(dir, 'creds.json'), {
    version: 1,
    controlPlaneUrl: 'http://127.0.0.1:1',
    devices: [{ name: 'unit', deviceId: DEVICE, username: 'u', password: 'p', urls: [`mqtt://127.0.0.1:${port}`] }],
  });
});

afterEach(async () => {
  await fleet?.stop({ graceful: false });
  fleet = undefined;
  seen.length = 0;
});

afterAll(async () => {
  await cpSide?.endAsync();
  await new Promise<void>((done) => broker.close(() => done()));
  await new Promise((done) => server.close(done));
  await cleanup();
});

function of<K extends TopicKind>(kind: K): MessageOf<K>[] {
  return seen.filter((m) => m.kind === kind).map((m) => m.value as MessageOf<K>);
}

function send<K extends TopicKind>(kind: K, message: MessageOf<K>): Promise<unknown> {
  return cpSide.publishAsync(topicFor(kind, DEVICE), encode(kind, message), { qos: 1 });
}

async function startOne(behaviour: Parameters<typeof startSimFleet>[0]['behaviour']): Promise<SimFleet> {
  fleet = await startSimFleet({ controlPlaneUrl: 'http://127.0.0.1:1', credentialsFile: join(dir, 'creds.json'), tickMs: 20, behaviour });
  await fleet.join(1);
  await fleet.waitFor((s) => s.connected === 1, 'connected', 10_000);
  return fleet;
}

const SHA = 'a'.repeat(64);
const desired = (version: number, loaded = true): MessageOf<'desired'> => ({
  v: 1,
  version,
  ts: Date.now(),
  models: [{ name: 'm1', url: 'https://models.example/m1.gguf', sha256: SHA, sizeBytes: 4000, pinned: false, loaded, contextSize: 2048, parallel: 1 }],
  limits: { maxParallelRequests: 4, maxQueueLength: 10 },
});

describe('SimDevice against a broker', () => {
  it('connects as the agent does, sends telemetry with seq/prevSeq, resends until acked, honours resend', async () => {
    const f = await startOne({ telemetryIntervalMs: 100, resendAfterMs: 400 });
    await waitFor(() => of('hello').length === 1 && of('status').length >= 1, 'hello and status');
    const hello = of('hello')[0];
    expect(of('status')[0]).toMatchObject({ state: 'online', reason: 'startup', sessionId: hello?.sessionId });
    await waitFor(() => of('telemetry').length >= 3, 'three entries');
    const first = of('telemetry').slice(0, 3);
    expect(first.map((t) => [t.seq, t.prevSeq])).toEqual([
      [1, 0],
      [2, 1],
      [3, 2],
    ]);
    // No ack: the oldest held entry goes again after resendAfterMs, with the same seq and prevSeq chain.
    await waitFor(() => of('telemetry').filter((t) => t.seq === 1).length >= 2, 'entry 1 resent', 5000);
    expect(f.stats().counters.entriesResent).toBeGreaterThan(0);
    // An ack answering the hello marks it online and drops what it covers.
    await send('outboxAck', { v: 1, upToSeq: 3, ts: Date.now(), sessionId: hello?.sessionId ?? '' });
    await f.waitFor((s) => s.online === 1 && s.counters.entriesAcked >= 3, 'acked', 5000);
    const device = f.devices[0];
    expect(device?.acknowledgedSeq).toBe(3);
    // resend: true -> every held entry again, oldest first, the oldest with prevSeq 0.
    const before = seen.length;
    await send('outboxAck', { v: 1, upToSeq: 3, ts: Date.now(), resend: true });
    await waitFor(() => seen.slice(before).some((m) => m.kind === 'telemetry' && m.value.seq === 4 && m.value.prevSeq === 0), 'held entries resent from 4', 5000);
    expect(f.stats().counters.resendRequests).toBe(1);
  });

  it('takes a desired state to ready, and reports failures with a code', async () => {
    const f = await startOne({ downloadMs: 100, loadMs: 50 });
    expect(f.arrivals()).toEqual([]);
    const sentAt = Date.now();
    await send('desired', desired(1));
    // the fleet records when the first desired state, and each model in one, first reached the device
    await waitFor(() => f.arrivals().length === 1, 'desired state arrival recorded', 5000);
    const [arrival] = f.arrivals();
    expect(arrival?.desiredAt).toBeGreaterThanOrEqual(sentAt);
    expect(arrival?.models).toEqual({ m1: arrival?.desiredAt });
    await waitFor(() => of('modelState').some((r) => r.models[0]?.state === 'ready'), 'ready', 5000);
    const states = of('modelState').map((r) => r.models.map((m) => m.state).join(','));
    expect(states.filter((s, i) => s !== states[i - 1])).toEqual(['pending', 'downloading', 'verifying', 'loading', 'ready']);
    expect(of('modelState').at(-1)).toMatchObject({ desiredVersion: 1, models: [{ name: 'm1', state: 'ready', loaded: true }] });
    // An older or equal version is ignored; a newer one without the model removes it.
    await send('desired', { ...desired(2), models: [] });
    await waitFor(() => of('modelState').some((r) => r.desiredVersion === 2 && r.models.length === 0), 'model removed', 5000);
    // first arrivals stay as they were
    expect(f.arrivals()).toEqual([arrival]);

    await fleet?.stop({ graceful: false });
    seen.length = 0;
    await startOne({ downloadMs: 40, loadMs: 10, modelFailureRate: 1, modelFailureCode: 'CHECKSUM_MISMATCH' });
    await send('desired', desired(3));
    await waitFor(() => of('modelState').some((r) => r.models[0]?.state === 'failed'), 'failed', 5000);
    expect(of('modelState').at(-1)?.models[0]).toMatchObject({ state: 'failed', code: 'CHECKSUM_MISMATCH' });
  });

  it('answers inference: streamed chunks then a result, errors, and cancel', async () => {
    const f = await startOne({ downloadMs: 10, loadMs: 10, ttftMs: 10, tokensPerSecond: 200 });
    await send('desired', desired(1));
    await f.waitFor((s) => s.modelStates.ready === 1, 'ready', 5000);
    const request = (requestId: string, extra: Partial<MessageOf<'inferenceRequest'>> = {}): MessageOf<'inferenceRequest'> => ({
      v: 1,
      requestId,
      attempt: 1,
      model: 'm1',
      messages: [{ role: 'user', content: 'hi' }],
      maxTokens: 20,
      priority: 5,
      deadline: Date.now() + 60_000,
      sentAt: Date.now(),
      stream: true,
      ...extra,
    });
    const responses = (id: string) => of('inferenceResponse').filter((r) => r.requestId === id);
    await send('inferenceRequest', request('req-ok'));
    await waitFor(() => responses('req-ok').some((r) => r.type === 'result'), 'result', 5000);
    const ok = responses('req-ok');
    const chunks = ok.filter((r) => r.type === 'chunk');
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.reduce((sum, c) => sum + (c.tokens ?? 0), 0)).toBe(20);
    expect(ok.at(-1)).toMatchObject({ type: 'result', attempt: 1, usage: { completionTokens: 20 }, chunkCount: chunks.length });

    await send('inferenceRequest', request('req-unknown', { model: 'nope' }));
    await waitFor(() => responses('req-unknown').length === 1, 'error', 5000);
    expect(responses('req-unknown')[0]).toMatchObject({ type: 'error', code: 'MODEL_NOT_FOUND' });

    await send('inferenceRequest', request('req-cancel', { maxTokens: 10_000 }));
    await waitFor(() => responses('req-cancel').length >= 1, 'first chunk', 5000);
    await send('inferenceCancel', { v: 1, requestId: 'req-cancel', attempt: 1, reason: 'client-disconnected' });
    await waitFor(() => responses('req-cancel').some((r) => r.type === 'error'), 'cancelled', 5000);
    expect(responses('req-cancel').at(-1)).toMatchObject({ type: 'error', code: 'CANCELLED', retryable: false });
    expect(f.stats().counters).toMatchObject({ inferenceServed: 1, inferenceCancelled: 1 });

    f.behaviour.inferenceErrorRate = 1;
    await send('inferenceRequest', request('req-fail', { stream: false }));
    await waitFor(() => responses('req-fail').length === 1, 'failure', 5000);
    expect(responses('req-fail')[0]).toMatchObject({ type: 'error', code: 'GENERATION_FAILED' });
  });

  it('stops as the agent on SIGTERM: status draining, then offline, for its own session', async () => {
    const f = await startOne({});
    const sessionId = f.devices[0]?.sessionId;
    // Only this connection's statuses: the will of the previous test's crash may still arrive.
    const mine = () => of('status').filter((s) => s.sessionId === sessionId);
    await waitFor(() => mine().length >= 1, 'online status');
    await f.stop();
    fleet = undefined;
    await waitFor(() => mine().some((s) => s.state === 'offline'), 'offline status', 5000);
    expect(mine().map((s) => `${s.state}/${s.reason ?? ''}`)).toEqual(['online/startup', 'draining/shutdown', 'offline/shutdown']);
  });
});
