// Valid fixtures for every message, for tests in any project: `import { fixtures } from '@flotilla/protocol/testing'`.
// Each factory returns a fresh object; pass overrides for the top-level fields you care about.
import type { Command, CommandAck, CommandKind } from '../schemas/commands.js';
import type { DesiredModel, DesiredState } from '../schemas/desired.js';
import type { DeviceEvent } from '../schemas/events.js';
import type { Hardware, Hello } from '../schemas/hello.js';
import type { InferenceCancel, InferenceChunk, InferenceError, InferenceRequest, InferenceResult } from '../schemas/inference.js';
import type { ModelStateName, ModelStateReport, ModelStatus } from '../schemas/model-state.js';
import type { OutboxAck } from '../schemas/outbox-ack.js';
import type { Status } from '../schemas/status.js';
import type { Telemetry } from '../schemas/telemetry.js';
import type { UsageRecord } from '../schemas/usage.js';
import type { EnrollRequest, EnrollResponse } from '../rest/enroll.js';
import type { MessageOf, TopicKind } from '../messages.js';

export const FIXTURE_TS = 1_790_000_000_000;
export const FIXTURE_DEVICE_ID = 'dev-kiosk-01';
export const FIXTURE_SHA256 = 'a'.repeat(64);

export function makeHardware(overrides: Partial<Hardware> = {}): Hardware {
  return {
    cpu: { model: 'Intel(R) Xeon(R) CPU', cores: 2 },
    memory: { totalBytes: 8 * 1024 ** 3, freeBytes: 5 * 1024 ** 3 },
    disk: { freeBytes: 40 * 1024 ** 3, totalBytes: 100 * 1024 ** 3 },
    gpus: [{ name: 'NVIDIA T4', vendor: 'nvidia', vramBytes: 16 * 1024 ** 3, vramFreeBytes: 15 * 1024 ** 3 }],
    os: { platform: 'linux', release: '6.1.0', arch: 'x64', hostname: 'kiosk-01' },
    ...overrides,
  };
}

export function makeHello(overrides: Partial<Hello> = {}): Hello {
  return {
    v: 1,
    ts: FIXTURE_TS,
    sessionId: 'sess-0001',
    agentVersion: '0.1.0',
    hardware: makeHardware(),
    runtimes: [
      { name: 'node', version: '20.20.0' },
      { name: 'node-llama-cpp', version: '3.22.1', gpuBackend: 'cpu' },
    ],
    models: [{ name: 'tiny-q8', fileName: 'tiny-q8.gguf', sha256: FIXTURE_SHA256, sizeBytes: 171_000 }],
    outbox: { lastSeq: 0 },
    labels: { site: 'berlin' },
    ...overrides,
  };
}

export function makeStatus(overrides: Partial<Status> = {}): Status {
  return { v: 1, state: 'online', sessionId: 'sess-0001', ts: FIXTURE_TS, reason: 'startup', agentVersion: '0.1.0', ...overrides };
}

export function makeTelemetry(overrides: Partial<Telemetry> = {}): Telemetry {
  return {
    v: 1,
    seq: 1,
    ts: FIXTURE_TS,
    windowMs: 5000,
    cpu: { percent: 37.5 },
    memory: { usedBytes: 3 * 1024 ** 3, totalBytes: 8 * 1024 ** 3 },
    gpus: [{ index: 0, vramUsedBytes: 1024 ** 3, vramTotalBytes: 16 * 1024 ** 3, utilizationPercent: 12 }],
    disk: { freeBytes: 40 * 1024 ** 3, modelsBytes: 171_000 },
    loadedModels: [{ name: 'tiny-q8', contextSize: 2048, parallel: 2, activeRequests: 1, memoryBytes: 50_000_000, lastUsedAt: FIXTURE_TS }],
    inference: {
      activeRequests: 1,
      queuedRequests: 0,
      completedRequests: 4,
      failedRequests: 0,
      generatedTokens: 512,
      tokensPerSecond: 2400,
      ttftMs: { avg: 12, p50: 11, p95: 20, max: 22 },
      latencyMs: { avg: 210, p50: 200, p95: 300, max: 320 },
    },
    draining: false,
    ...overrides,
  };
}

export function makeDesiredModel(overrides: Partial<DesiredModel> = {}): DesiredModel {
  return {
    name: 'tiny-q8',
    url: 'http://127.0.0.1:8080/models/tiny-q8.gguf',
    sha256: FIXTURE_SHA256,
    sizeBytes: 171_000,
    pinned: false,
    loaded: true,
    contextSize: 2048,
    parallel: 2,
    ...overrides,
  };
}

export function makeDesired(overrides: Partial<DesiredState> = {}): DesiredState {
  return {
    v: 1,
    version: 1,
    ts: FIXTURE_TS,
    models: [makeDesiredModel()],
    limits: { maxMemoryBytes: 4 * 1024 ** 3, diskQuotaBytes: 20 * 1024 ** 3, maxParallelRequests: 4, maxQueueLength: 1000, idleUnloadMs: 600_000 },
    ...overrides,
  };
}

type ModelStatusOf<S extends ModelStateName> = Extract<ModelStatus, { state: S }>;

const MODEL_STATE_EXTRAS: { [S in ModelStateName]: Omit<ModelStatusOf<S>, 'name' | 'sha256' | 'desiredVersion' | 'since'> } = {
  pending: { state: 'pending' },
  downloading: { state: 'downloading', receivedBytes: 85_000, totalBytes: 171_000 },
  verifying: { state: 'verifying' },
  loading: { state: 'loading' },
  ready: { state: 'ready', loaded: true },
  unloading: { state: 'unloading' },
  failed: { state: 'failed', code: 'INSUFFICIENT_MEMORY', message: 'needs 7.1 GB, 3.2 GB available' },
};

/** One model's state; `makeModelStatus('failed', { code: 'CHECKSUM_MISMATCH' })`. */
export function makeModelStatus<S extends ModelStateName = 'downloading'>(
  state: S = 'downloading' as S,
  overrides: Partial<ModelStatusOf<S>> = {},
): ModelStatusOf<S> {
  return { name: 'tiny-q8', sha256: FIXTURE_SHA256, desiredVersion: 1, since: FIXTURE_TS, ...MODEL_STATE_EXTRAS[state], ...overrides } as unknown as ModelStatusOf<S>;
}

export function makeModelState(overrides: Partial<ModelStateReport> = {}): ModelStateReport {
  return {
    v: 1,
    ts: FIXTURE_TS,
    desiredVersion: 1,
    models: [
      makeModelStatus('downloading'),
      makeModelStatus('ready', { name: 'small-q4', sha256: 'b'.repeat(64) }),
      makeModelStatus('failed', { name: 'big-q8', sha256: 'c'.repeat(64) }),
    ],
    ...overrides,
  };
}

export function makeInferenceRequest(overrides: Partial<InferenceRequest> = {}): InferenceRequest {
  return {
    v: 1,
    requestId: 'req-0001',
    attempt: 1,
    model: 'tiny-q8',
    messages: [
      { role: 'system', content: 'You are terse.' },
      { role: 'user', content: 'Weather in Berlin?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [{ id: 'call-1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Berlin"}' } }],
      },
      { role: 'tool', tool_call_id: 'call-1', content: '{"tempC":21}' },
    ],
    tools: [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'Current weather for a city',
          parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
        },
      },
    ],
    toolChoice: 'auto',
    responseFormat: {
      type: 'json_schema',
      json_schema: { name: 'answer', schema: { type: 'object', properties: { text: { type: 'string' } } }, strict: true },
    },
    maxTokens: 256,
    temperature: 0,
    topP: 1,
    seed: 42,
    stop: ['</s>'],
    priority: 5,
    deadline: FIXTURE_TS + 30_000,
    sentAt: FIXTURE_TS,
    stream: true,
    continuation: { content: 'It is', tokens: { modelSha256: 'c'.repeat(64), ids: [1026, 475] } },
    sessionKey: 'chat-77',
    ...overrides,
  };
}

export function makeInferenceChunk(overrides: Partial<InferenceChunk> = {}): InferenceChunk {
  return {
    v: 1,
    type: 'chunk',
    requestId: 'req-0001',
    attempt: 1,
    seq: 0,
    tokens: 1,
    tokenIds: [2087],
    delta: {
      content: ' sunny',
      toolCalls: [{ index: 0, id: 'call-2', type: 'function', function: { name: 'get_weather', arguments: '{"ci' } }],
    },
    ...overrides,
  };
}

export function makeInferenceResult(overrides: Partial<InferenceResult> = {}): InferenceResult {
  return {
    v: 1,
    type: 'result',
    requestId: 'req-0001',
    attempt: 1,
    finishReason: 'stop',
    message: { role: 'assistant', content: 'It is sunny, 21 C.' },
    usage: { promptTokens: 42, completionTokens: 9 },
    timings: { ttftMs: 11.5, totalMs: 180 },
    chunkCount: 9,
    ...overrides,
  };
}

export function makeInferenceError(overrides: Partial<InferenceError> = {}): InferenceError {
  return { v: 1, type: 'error', requestId: 'req-0001', attempt: 1, code: 'QUEUE_FULL', message: 'queue holds 1000 requests', retryable: true, ...overrides };
}

export function makeInferenceCancel(overrides: Partial<InferenceCancel> = {}): InferenceCancel {
  return { v: 1, requestId: 'req-0001', attempt: 1, reason: 'client-disconnected', ...overrides };
}

type CommandOf<K extends CommandKind> = Extract<Command, { kind: K }>;

const COMMAND_ARGS: { [K in CommandKind]: CommandOf<K>['args'] } = {
  drain: { timeoutMs: 30_000 },
  resume: {},
  'refresh-inventory': {},
  'unload-model': { model: 'tiny-q8' },
  'delete-model': { model: 'tiny-q8' },
  'resend-outbox': {},
};

/** A command; `makeCommand('drain', { args: { timeoutMs: 0 } })`. */
export function makeCommand<K extends CommandKind = 'unload-model'>(
  kind: K = 'unload-model' as K,
  overrides: Partial<CommandOf<K>> = {},
): CommandOf<K> {
  return {
    v: 1,
    commandId: 'cmd-0001',
    issuedAt: FIXTURE_TS,
    expiresAt: FIXTURE_TS + 60_000,
    kind,
    args: COMMAND_ARGS[kind],
    ...overrides,
  } as CommandOf<K>;
}

export function makeCommandAck(overrides: Partial<CommandAck> = {}): CommandAck {
  return { v: 1, commandId: 'cmd-0001', status: 'completed', ts: FIXTURE_TS, ...overrides };
}

export function makeEvent(overrides: Partial<DeviceEvent> = {}): DeviceEvent {
  return {
    v: 1,
    seq: 2,
    ts: FIXTURE_TS,
    level: 'error',
    code: 'MODEL_LOAD_FAILED',
    message: 'tiny-q8: Failed to load model',
    model: 'tiny-q8',
    details: { reason: 'check_tensor_dims: wrong shape' },
    ...overrides,
  };
}

export function makeUsage(overrides: Partial<UsageRecord> = {}): UsageRecord {
  return {
    v: 1,
    seq: 3,
    ts: FIXTURE_TS,
    requestId: 'req-0001',
    model: 'tiny-q8',
    origin: 'control-plane',
    outcome: 'success',
    promptTokens: 42,
    completionTokens: 9,
    ttftMs: 11.5,
    latencyMs: 180,
    queueMs: 2,
    ...overrides,
  };
}

export function makeOutboxAck(overrides: Partial<OutboxAck> = {}): OutboxAck {
  return { v: 1, upToSeq: 3, ts: FIXTURE_TS, ...overrides };
}

export function makeEnrollRequest(overrides: Partial<EnrollRequest> = {}): EnrollRequest {
  return { token: 'flt_boot_0123456789abcdef', name: 'Kiosk 01', agentVersion: '0.1.0', hardware: makeHardware(), ...overrides };
}

export function makeEnrollResponse(overrides: Partial<EnrollResponse> = {}): EnrollResponse {
  return {
    deviceId: FIXTURE_DEVICE_ID,
    mqtt: { username: FIXTURE_DEVICE_ID, password: 'p4ssw0rd-once', urls: ['mqtt://127.0.0.1:1883'] },
    ...overrides,
  };
}

/** One valid message per topic kind (inferenceResponse: a result). */
export const fixtures: { readonly [K in TopicKind]: () => MessageOf<K> } = {
  hello: () => makeHello(),
  status: () => makeStatus(),
  telemetry: () => makeTelemetry(),
  desired: () => makeDesired(),
  modelState: () => makeModelState(),
  inferenceRequest: () => makeInferenceRequest(),
  inferenceResponse: () => makeInferenceResult(),
  inferenceCancel: () => makeInferenceCancel(),
  command: () => makeCommand(),
  commandAck: () => makeCommandAck(),
  event: () => makeEvent(),
  usage: () => makeUsage(),
  outboxAck: () => makeOutboxAck(),
};
