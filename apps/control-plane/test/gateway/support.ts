import { createServer, type Server } from 'node:http';
import { PROTOCOL_VERSION, decode, encode, topics, type DesiredModel, type ErrorCode } from '@flotilla/protocol';
import { makeModelState, makeModelStatus, makeStatus } from '@flotilla/protocol/testing';
import type { ControlPlane } from '../../src/app/create-app.js';
import { hashSecret, generateSecret, secretPrefix } from '../../src/identity/auth/secrets.js';
import { FleetEvents } from '../../src/platform/events/fleet-events.js';


/** A gateway key with limits, inserted like the key API would. */
export async function createGatewayKey(cp: ControlPlane, options: { rateLimitPerMinute?: number; modelAllowList?: string[] }): Promise<string> {
  const key = generateSecret('apiKey');
  await cp.database.prisma.apiKey.create({
    data: {
      name: 'test key',
      prefix: secretPrefix(key),
      keyHash: hashSecret(key),
      scope: 'gateway',
      rateLimitPerMinute: options.rateLimitPerMinute ?? null,
      modelAllowList: options.modelAllowList ?? [],
    },
  });
  return key;
}

export interface TestModelFile {
  path: string;
  sha256: string;
  sizeBytes: number;
}

/**
 * Catalog rows (inserted directly: the catalog API is another module's) for the gateway's tier and context data; the
 * `catalog.changed` event makes the gateway re-read the catalog at once, as after the catalog API.
 */
export async function addCatalogModel(cp: ControlPlane, name: string, tier: 'small' | 'medium' | 'large', file: TestModelFile, contextLength = 2048): Promise<void> {
  const row = await cp.database.prisma.model.create({
    data: {
      name,
      sourceUrl: `file://${file.path}`,
      sha256: file.sha256,
      sizeBytes: BigInt(file.sizeBytes),
      quantization: 'Q8_0',
      memoryBytes: BigInt(file.sizeBytes * 4),
      contextLength,
      tier,
    },
  });
  cp.app.get(FleetEvents).emit('catalog.changed', { modelId: row.id, name: row.name, action: 'created' });
}

/**
 * Publishes a device's desired state (retained) the way the scheduler does; the version is time-based so it wins over
 * a lower one another module may publish.
 */
export async function publishDesired(cp: ControlPlane, deviceId: string, models: { name: string; file: TestModelFile }[]): Promise<void> {
  const desired: DesiredModel[] = models.map((m) => ({
    name: m.name,
    url: `file://${m.file.path}`,
    sha256: m.file.sha256,
    sizeBytes: m.file.sizeBytes,
    pinned: true,
    loaded: true,
    contextSize: 2048,
    // more sequences than running jobs: the agent refuses with QUEUE_FULL when it runs out of sequences
    parallel: 4,
  }));
  const payload = encode('desired', {
    v: PROTOCOL_VERSION,
    version: Math.floor(Date.now() / 1000),
    ts: Date.now(),
    models: desired,
    limits: { maxParallelRequests: 2, maxQueueLength: 100 },
  });
  await cp.broker.publish(topics.desired(deviceId), payload, { qos: 1, retain: true });
}

/** An OpenAI-compatible stand-in for the cloud fallback: always answers "cloud answer" (streamed: `pauseMs` between pieces). */
export async function startCloudStandIn(options: { pauseMs?: number } = {}): Promise<{ url: string; calls: number; close(): Promise<void> }> {
  const state = { calls: 0 };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      state.calls++;
      const parsed = JSON.parse(body) as { model: string; stream?: boolean };
      const base = { id: 'chatcmpl-cloud', created: 1, model: parsed.model };
      if (parsed.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const frames = [
          ...['cloud ', 'answer'].map((piece) => ({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: piece }, finish_reason: null }] })),
          { ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
          { ...base, object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } },
        ];
        (async () => {
          for (const [i, frame] of frames.entries()) {
            if (options.pauseMs && i < 2) await new Promise((done) => setTimeout(done, options.pauseMs));
            res.write(`data: ${JSON.stringify(frame)}\n\n`);
          }
          res.end('data: [DONE]\n\n');
        })().catch((error: unknown) => res.destroy(error instanceof Error ? error : new Error(String(error))));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          ...base,
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: 'cloud answer' }, finish_reason: 'stop' }],
          usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
        }),
      );
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    get calls() {
      return state.calls;
    },
    close: () => new Promise<void>((done) => server.close(() => done())),
  };
}

export interface ScriptedDevice {
  deviceId: string;
  /** request ids of the jobs it was sent */
  jobs: string[];
  /** publishes `offline` and clears its retained messages */
  stop(): Promise<void>;
}

/**
 * A device that exists only as the messages a real agent would publish, sent through the control plane's broker: it
 * reports `models` ready and answers every job with `failure`. For failures real agents do not produce on demand
 * (every replica of a model failing); everything between the client and the broker stays real.
 */
export async function startFailingDevice(
  cp: ControlPlane,
  deviceId: string,
  models: string[],
  failure: { code: ErrorCode; message: string; retryable: boolean },
): Promise<ScriptedDevice> {
  const jobs: string[] = [];
  const sessionId = `sess-${deviceId}`;
  const unsubscribe = await cp.broker.subscribe(topics.inferenceRequest(deviceId), (m) => {
    const job = decode('inferenceRequest', m.payload);
    if (!job.ok) return;
    jobs.push(job.value.requestId);
    const answer = encode('inferenceResponse', { v: PROTOCOL_VERSION, type: 'error', requestId: job.value.requestId, attempt: job.value.attempt, ...failure });
    cp.broker.publish(topics.inferenceResponse(deviceId), answer, { qos: 1 }).catch((error: unknown) => console.error('scripted device: answer not published', error));
  });
  const state = makeModelState({ ts: Date.now(), models: models.map((name) => makeModelStatus('ready', { name, sha256: 'a'.repeat(64), since: Date.now() })) });
  await cp.broker.publish(topics.modelState(deviceId), encode('modelState', state), { qos: 1, retain: true });
  await cp.broker.publish(topics.status(deviceId), encode('status', makeStatus({ state: 'online', sessionId, ts: Date.now() })), { qos: 1, retain: true });
  return {
    deviceId,
    jobs,
    async stop() {
      await unsubscribe();
      await cp.broker.publish(topics.status(deviceId), encode('status', makeStatus({ state: 'offline', sessionId, ts: Date.now(), reason: 'shutdown' })), { qos: 1 });
      await cp.broker.publish(topics.status(deviceId), '', { qos: 1, retain: true });
      await cp.broker.publish(topics.modelState(deviceId), '', { qos: 1, retain: true });
    },
  };
}
