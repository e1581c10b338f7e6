import { ErrorCode, PROTOCOL_VERSION, decode, encode, topics, type InferenceCancel, type InferenceRequest, type MessageOf } from '@flotilla/protocol';
import { connectAsync, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedBroker, type BrokerSecurity } from '../../src/platform/broker/embedded-broker.js';
import { Dispatcher, type AttemptFailure, type DispatchRequest } from '../../src/gateway/dispatcher.js';
import { pollUntil } from '../support/poll.js';

// The dispatcher against a real embedded broker and a device that is a plain MQTT client with its own persistent
// session, answering with the protocol's messages: what a real agent unwinding an old attempt would send.
const DEVICE = 'dev-attempts';
const security: BrokerSecurity = {
  authenticate: async (clientId, username, password) => (username === clientId && password?.toString() === 'pw' ? { deviceId: clientId } : null),
  canPublish: (p, topic) => topic.startsWith(`flotilla/v1/devices/${p.deviceId}/`),
  canSubscribe: (p, filter) => filter.startsWith(`flotilla/v1/devices/${p.deviceId}/`),
};

type Seen = { kind: 'request'; value: InferenceRequest } | { kind: 'cancel'; value: InferenceCancel };

describe('Dispatcher: attempts keyed on the wire [P-3.6][P-3.7][P-3.8]', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function setup(): Promise<{ broker: EmbeddedBroker; dispatcher: Dispatcher; connectDevice: () => Promise<MqttClient>; seen: Seen[] }> {
    const logger = pino({ level: 'silent' });
    const broker = await EmbeddedBroker.start({ host: '127.0.0.1', port: 0, keepaliveLimitSeconds: 60, maxMessageBytes: 1 << 20, security, logger });
    cleanups.push(() => broker.close());
    broker.open();
    const dispatcher = new Dispatcher(broker, logger);
    await dispatcher.onModuleInit();
    cleanups.push(() => dispatcher.onModuleDestroy());
    const seen: Seen[] = [];
    const connectDevice = async (): Promise<MqttClient> => {
      const client = await connectAsync(`mqtt://127.0.0.1:${broker.port}`, { clientId: DEVICE, username: DEVICE, password: 'pw', clean: false, reconnectPeriod: 0 });
      cleanups.push(() => client.endAsync(true));
      client.on('message', (topic, payload) => {
        if (topic === topics.inferenceRequest(DEVICE)) {
          const d = decode('inferenceRequest', payload);
          if (d.ok) seen.push({ kind: 'request', value: d.value });
        } else if (topic === topics.inferenceCancel(DEVICE)) {
          const d = decode('inferenceCancel', payload);
          if (d.ok) seen.push({ kind: 'cancel', value: d.value });
        }
      });
      await client.subscribeAsync([topics.inferenceRequest(DEVICE), topics.inferenceCancel(DEVICE)], { qos: 1 });
      return client;
    };
    return { broker, dispatcher, connectDevice, seen };
  }

  const job = (attempt: number): DispatchRequest => ({
    requestId: 'req-attempts-1',
    attempt,
    model: 'tiny',
    messages: [{ role: 'user', content: 'hi' }],
    priority: 5,
    deadline: Date.now() + 60_000,
    stream: true,
  });

  function recorder() {
    const events: string[] = [];
    return {
      events,
      callbacks: {
        onChunk: (c: { delta: { content?: string } }) => events.push(`chunk:${c.delta.content ?? ''}`),
        onResult: (r: { message: { content: string | null } }) => events.push(`result:${r.message.content ?? ''}`),
        onFailure: (f: AttemptFailure) => events.push(`failure:${f.code}`),
      },
    };
  }

  it('a new attempt on the device still unwinding the old one is not failed by the old CANCELLED, nor fed its late chunks', async () => {
    const { dispatcher, connectDevice, seen } = await setup();
    const device = await connectDevice();
    const respond = (message: MessageOf<'inferenceResponse'>) => device.publishAsync(topics.inferenceResponse(DEVICE), encode('inferenceResponse', message), { qos: 1 });

    const first = recorder();
    dispatcher.send(DEVICE, job(1), first.callbacks);
    await pollUntil(() => seen.some((s) => s.kind === 'request' && s.value.attempt === 1), { what: 'attempt 1 on the device' });
    // The stall timer gives up on attempt 1; tier escalation then lands attempt 2 on the same device.
    dispatcher.cancel('req-attempts-1', 'failover');
    const second = recorder();
    dispatcher.send(DEVICE, job(2), second.callbacks);
    await pollUntil(() => seen.some((s) => s.kind === 'request' && s.value.attempt === 2), { what: 'attempt 2 on the device' });

    // The device unwinds attempt 1 (a late chunk, then CANCELLED) while attempt 2 already runs.
    await respond({ v: PROTOCOL_VERSION, type: 'chunk', requestId: 'req-attempts-1', attempt: 1, seq: 0, delta: { content: 'stale' } });
    await respond({ v: PROTOCOL_VERSION, type: 'error', requestId: 'req-attempts-1', attempt: 1, code: ErrorCode.CANCELLED, message: 'cancelled', retryable: false });
    await respond({ v: PROTOCOL_VERSION, type: 'chunk', requestId: 'req-attempts-1', attempt: 2, seq: 0, delta: { content: 'fresh' } });
    await respond({
      v: PROTOCOL_VERSION,
      type: 'result',
      requestId: 'req-attempts-1',
      attempt: 2,
      finishReason: 'stop',
      message: { role: 'assistant', content: 'fresh' },
      usage: { promptTokens: 3, completionTokens: 1 },
      timings: { ttftMs: 1, totalMs: 2 },
      chunkCount: 1,
    });
    await pollUntil(() => second.events.length >= 2 || second.events.some((e) => e.startsWith('failure')), { what: 'attempt 2 to end' });
    expect(second.events).toEqual(['chunk:fresh', 'result:fresh']);
    expect(first.events).toEqual([]); // cancelled: no callback afterwards
    expect(dispatcher.inFlight).toBe(0);
    expect(seen.find((s) => s.kind === 'cancel')?.value).toMatchObject({ requestId: 'req-attempts-1', attempt: 1, reason: 'failover' });
  });

  it('a device that goes offline gets a cancel for each of its attempts, delivered after the job its session still holds', async () => {
    const { dispatcher, connectDevice, seen } = await setup();
    const device = await connectDevice();
    await device.endAsync(true); // the link drops; the persistent session keeps the subscriptions
    await new Promise((r) => setTimeout(r, 100));

    const queued = recorder();
    dispatcher.send(DEVICE, job(3), queued.callbacks); // queued by the broker for the offline device
    dispatcher.abandonDevice(DEVICE, { code: ErrorCode.DEVICE_OFFLINE, message: `device ${DEVICE} went offline`, retryable: true });
    expect(queued.events).toEqual(['failure:DEVICE_OFFLINE']);
    expect(dispatcher.inFlight).toBe(0);

    await connectDevice(); // back with the same session: the broker delivers what it held, in order
    await pollUntil(() => seen.length >= 2, { what: 'the queued job and its cancel' });
    expect(seen.map((s) => `${s.kind}:${s.value.attempt}`)).toEqual(['request:3', 'cancel:3']);
    expect(seen[1]?.value).toMatchObject({ requestId: 'req-attempts-1', reason: 'failover' });
  });
});
