import { describe, expect, it } from 'vitest';
import { ErrorCode } from './errors.js';
import { decode, decodeTopic, encode, lastWill, ProtocolValidationError, validate, type DecodeResult } from './codec.js';
import { TOPIC_KINDS, type MessageOf, type TopicKind } from './messages.js';
import { topics } from './topics.js';
import { EnrollRequestSchema } from './rest/enroll.js';
import type { CommandKind } from './schemas/commands.js';
import type { ModelStateName } from './schemas/model-state.js';
import {
  fixtures,
  makeCommand,
  makeDesired,
  makeDesiredModel,
  makeInferenceChunk,
  makeInferenceError,
  makeInferenceRequest,
  makeInferenceResult,
  makeModelState,
  makeModelStatus,
  makeStatus,
  makeTelemetry,
} from './testing/factories.js';
import { MAX_PAYLOAD_BYTES } from './version.js';

type Json = Record<string, unknown>;

/** A fixture as plain JSON we can break. */
function raw(kind: TopicKind): Json {
  return JSON.parse(JSON.stringify(fixtures[kind]())) as Json;
}

function setPath(obj: Json, path: ReadonlyArray<string | number>, value: unknown): Json {
  let node: Record<string | number, unknown> = obj;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  const last = path[path.length - 1] as string | number;
  if (value === undefined) delete node[last];
  else node[last] = value;
  return obj;
}

function expectError<T>(result: DecodeResult<T>, code: ErrorCode, message?: string | RegExp): void {
  expect(result.ok, JSON.stringify(result)).toBe(false);
  if (result.ok) return;
  expect(result.error.code).toBe(code);
  expect(result.error.message).not.toContain('\n');
  expect(result.error.issues.length).toBeGreaterThan(0);
  if (message !== undefined) expect(result.error.message).toMatch(message);
}

function roundTrip<K extends TopicKind>(kind: K, message: MessageOf<K>): void {
  expect(decode(kind, encode(kind, message))).toEqual({ ok: true, value: message });
}

/** Per kind: a required field to drop, a field to give the wrong type, a bounded string to overflow. */
const BREAKS: Record<TopicKind, { missing: (string | number)[]; wrongType: [(string | number)[], unknown]; oversized: (string | number)[] }> = {
  hello: { missing: ['hardware', 'cpu', 'cores'], wrongType: [['hardware', 'memory', 'totalBytes'], '8GB'], oversized: ['agentVersion'] },
  status: { missing: ['sessionId'], wrongType: [['state'], 1], oversized: ['agentVersion'] },
  telemetry: { missing: ['seq'], wrongType: [['memory', 'usedBytes'], '3GB'], oversized: ['loadedModels', 0, 'name'] },
  desired: { missing: ['version'], wrongType: [['models', 0, 'pinned'], 'yes'], oversized: ['models', 0, 'name'] },
  modelState: { missing: ['models', 0, 'receivedBytes'], wrongType: [['models', 0, 'totalBytes'], '1'], oversized: ['models', 2, 'message'] },
  inferenceRequest: { missing: ['deadline'], wrongType: [['stream'], 'true'], oversized: ['messages', 1, 'content'] },
  inferenceResponse: { missing: ['finishReason'], wrongType: [['usage', 'promptTokens'], 1.5], oversized: ['message', 'content'] },
  inferenceCancel: { missing: ['requestId'], wrongType: [['requestId'], 7], oversized: ['requestId'] },
  command: { missing: ['args', 'model'], wrongType: [['issuedAt'], '2026-11-24'], oversized: ['commandId'] },
  commandAck: { missing: ['status'], wrongType: [['ts'], null], oversized: ['commandId'] },
  event: { missing: ['level'], wrongType: [['seq'], 0], oversized: ['message'] },
  usage: { missing: ['latencyMs'], wrongType: [['promptTokens'], -1], oversized: ['model'] },
  outboxAck: { missing: ['upToSeq'], wrongType: [['upToSeq'], '3'], oversized: [] },
};

function dotted(kind: string, path: ReadonlyArray<string | number>): string {
  return path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : `${acc}.${k}`), kind);
}

describe('[P-1.1] round trip: encode -> decode returns the same message', () => {
  it.each(TOPIC_KINDS)('[P-1.1] %s', (kind) => roundTrip(kind, fixtures[kind]()));

  it('[P-3.7] every inference response type', () => {
    roundTrip('inferenceResponse', makeInferenceChunk());
    roundTrip('inferenceResponse', makeInferenceChunk({ seq: 7, delta: { content: '' } }));
    roundTrip('inferenceResponse', makeInferenceChunk({ delta: { toolCalls: [{ index: 0, function: { arguments: 'ty":"Berlin"}' } }] } }));
    roundTrip('inferenceResponse', makeInferenceError({ code: 'CANCELLED', retryable: false }));
    roundTrip('inferenceResponse', {
      ...makeInferenceResult(),
      finishReason: 'tool_calls',
      message: { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] },
    });
  });

  it('[P-3.9] every command kind', () => {
    const kinds: CommandKind[] = ['drain', 'resume', 'refresh-inventory', 'unload-model', 'delete-model', 'resend-outbox'];
    for (const kind of kinds) roundTrip('command', makeCommand(kind));
    roundTrip('command', makeCommand('drain', { args: {}, expiresAt: undefined }));
  });

  it('[P-3.5] every model state', () => {
    const states: ModelStateName[] = ['pending', 'downloading', 'verifying', 'loading', 'ready', 'unloading', 'failed'];
    roundTrip('modelState', makeModelState({ models: states.map((state, i) => makeModelStatus(state, { name: `m-${i}` })) }));
    roundTrip('modelState', makeModelState({ models: [makeModelStatus('failed', { code: 'CHECKSUM_MISMATCH', message: 'sha256 differs' })] }));
  });

  it('[P-3.6] a minimal request (only required fields)', () => {
    roundTrip('inferenceRequest', {
      v: 1,
      requestId: 'r1',
      attempt: 1,
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      priority: 0,
      deadline: 1,
      sentAt: 0,
      stream: false,
    });
  });

  it('[P-1.1] accepts a Uint8Array payload', () => {
    const payload = new TextEncoder().encode(encode('status', makeStatus()));
    expect(decode('status', payload)).toEqual({ ok: true, value: makeStatus() });
  });
});

describe('[P-1.3] versioning and forward compatibility', () => {
  it.each(TOPIC_KINDS)('[P-1.3] %s: v 2 is UNSUPPORTED_VERSION', (kind) => {
    expectError(decode(kind, JSON.stringify({ ...raw(kind), v: 2 })), ErrorCode.UNSUPPORTED_VERSION, `${kind}.v: unsupported protocol version 2 (expected 1)`);
  });

  it('[P-1.3] a missing or non-number v is INVALID_MESSAGE', () => {
    expectError(decode('status', JSON.stringify(setPath(raw('status'), ['v'], undefined))), ErrorCode.INVALID_MESSAGE, /^status\.v: /);
    expectError(decode('status', JSON.stringify({ ...raw('status'), v: '1' })), ErrorCode.INVALID_MESSAGE, /^status\.v: /);
  });

  it('[P-1.3] unknown fields are ignored by decode and dropped by encode', () => {
    const withExtra = { ...raw('telemetry'), futureField: { x: 1 } };
    const decoded = decode('telemetry', JSON.stringify(withExtra));
    expect(decoded).toEqual({ ok: true, value: makeTelemetry() });
    const encoded = encode('telemetry', withExtra as unknown as MessageOf<'telemetry'>);
    expect(JSON.parse(encoded)).not.toHaveProperty('futureField');
  });
});

describe('[P-1.1] rejections name the first problem', () => {
  it.each(TOPIC_KINDS)('[P-1.1] %s: missing field is INVALID_MESSAGE', (kind) => {
    const { missing } = BREAKS[kind];
    const result = decode(kind, JSON.stringify(setPath(raw(kind), missing, undefined)));
    expectError(result, ErrorCode.INVALID_MESSAGE, `${dotted(kind, missing)}: missing`);
  });

  it.each(TOPIC_KINDS)('[P-1.1] %s: wrong type is INVALID_MESSAGE', (kind) => {
    const [path, value] = BREAKS[kind].wrongType;
    const result = decode(kind, JSON.stringify(setPath(raw(kind), path, value)));
    expectError(result, ErrorCode.INVALID_MESSAGE, new RegExp(`^${dotted(kind, path).replace(/[.[\]]/g, '\\$&')}: `));
  });

  it.each(TOPIC_KINDS.filter((k) => BREAKS[k].oversized.length > 0))('[P-1.4] %s: oversized string is INVALID_MESSAGE', (kind) => {
    const { oversized } = BREAKS[kind];
    const result = decode(kind, JSON.stringify(setPath(raw(kind), oversized, 'x'.repeat(300 * 1024))));
    expectError(result, ErrorCode.INVALID_MESSAGE, new RegExp(`^${dotted(kind, oversized).replace(/[.[\]]/g, '\\$&')}: .*(<=|characters)`));
  });

  it.each(TOPIC_KINDS)('[P-1.1] %s: malformed JSON is MALFORMED_JSON', (kind) => {
    expectError(decode(kind, encode(kind, fixtures[kind]()).slice(0, -1)), ErrorCode.MALFORMED_JSON, `${kind}: malformed JSON`);
  });

  it.each(TOPIC_KINDS)('[P-1.4] %s: payload over MAX_PAYLOAD_BYTES is PAYLOAD_TOO_LARGE', (kind) => {
    const big = JSON.stringify({ ...raw(kind), padding: ' '.repeat(MAX_PAYLOAD_BYTES) });
    expectError(decode(kind, big), ErrorCode.PAYLOAD_TOO_LARGE, `${kind}: payload is`);
    expectError(decode(kind, new TextEncoder().encode(big)), ErrorCode.PAYLOAD_TOO_LARGE);
  });

  it('[P-1.4] the size limit counts UTF-8 bytes, not characters', () => {
    const text = JSON.stringify({ ...raw('event'), message: 'ok', details: { note: '€'.repeat(400_000) } });
    expect(text.length).toBeLessThan(MAX_PAYLOAD_BYTES);
    expectError(decode('event', text), ErrorCode.PAYLOAD_TOO_LARGE);
  });

  it('[P-1.4] decode honours a lower maxBytes', () => {
    const payload = encode('hello', fixtures.hello());
    expectError(decode('hello', payload, { maxBytes: 100 }), ErrorCode.PAYLOAD_TOO_LARGE, 'limit 100');
    expect(decode('hello', payload, { maxBytes: payload.length }).ok).toBe(true);
  });

  it('[P-1.1] invalid UTF-8 bytes are MALFORMED_JSON', () => {
    expectError(decode('status', new Uint8Array([0x7b, 0xff, 0x7d])), ErrorCode.MALFORMED_JSON, 'status: payload is not valid UTF-8');
  });

  it('[P-1.1] JSON that is not an object is INVALID_MESSAGE', () => {
    expectError(decode('status', '[]'), ErrorCode.INVALID_MESSAGE, 'status: expected object, received array');
    expectError(decode('status', 'null'), ErrorCode.INVALID_MESSAGE, 'status: expected object, received null');
    expectError(decode('status', ''), ErrorCode.MALFORMED_JSON);
  });

  it('[P-1.1] the message of the example in the document', () => {
    const result = decode('telemetry', JSON.stringify(setPath(raw('telemetry'), ['memory', 'usedBytes'], '3GB')));
    expectError(result, ErrorCode.INVALID_MESSAGE, /^telemetry\.memory\.usedBytes: expected number, received string$/);
  });

  it('[P-1.1] issues list every problem', () => {
    const broken = setPath(setPath(raw('telemetry'), ['seq'], undefined), ['cpu', 'percent'], 101);
    const result = decode('telemetry', JSON.stringify(broken));
    expectError(result, ErrorCode.INVALID_MESSAGE);
    if (!result.ok) expect(result.error.issues.map((i) => i.path)).toEqual(['telemetry.seq', 'telemetry.cpu.percent']);
  });
});

describe('[P-3] message-specific rules', () => {
  it('[P-3.7] unknown response type, empty chunk delta', () => {
    expectError(decode('inferenceResponse', JSON.stringify({ ...raw('inferenceResponse'), type: 'partial' })), ErrorCode.INVALID_MESSAGE, 'inferenceResponse.type: unknown type');
    const empty = { v: 1, type: 'chunk', requestId: 'r', attempt: 1, seq: 0, delta: {} };
    expectError(decode('inferenceResponse', JSON.stringify(empty)), ErrorCode.INVALID_MESSAGE, 'inferenceResponse.delta: a chunk carries content and/or toolCalls');
  });

  it('[P-3.6, P-3.7] token ids of a chunk and of a continuation are bounded ids; a continuation names its model file', () => {
    const chunk = JSON.parse(encode('inferenceResponse', makeInferenceChunk())) as Json;
    expectError(decode('inferenceResponse', JSON.stringify({ ...chunk, tokenIds: [-1] })), ErrorCode.INVALID_MESSAGE, /^inferenceResponse\.tokenIds\[0\]: /);
    expectError(decode('inferenceResponse', JSON.stringify({ ...chunk, tokenIds: Array(4097).fill(1) })), ErrorCode.INVALID_MESSAGE, /^inferenceResponse\.tokenIds: /);
    const base = JSON.parse(encode('inferenceRequest', makeInferenceRequest())) as Json;
    const withTokens = (tokens: unknown) => JSON.stringify({ ...base, continuation: { content: 'It is', tokens } });
    expect(decode('inferenceRequest', withTokens({ modelSha256: 'a'.repeat(64), ids: [5, 6] })).ok).toBe(true);
    expectError(decode('inferenceRequest', withTokens({ ids: [5] })), ErrorCode.INVALID_MESSAGE, /^inferenceRequest\.continuation\.tokens\.modelSha256: /);
    expectError(decode('inferenceRequest', withTokens({ modelSha256: 'a'.repeat(64), ids: [] })), ErrorCode.INVALID_MESSAGE, /^inferenceRequest\.continuation\.tokens\.ids: /);
    expectError(decode('inferenceRequest', withTokens({ modelSha256: 'a'.repeat(64), ids: Array(32 * 1024 + 1).fill(1) })), ErrorCode.INVALID_MESSAGE, /^inferenceRequest\.continuation\.tokens\.ids: /);
  });

  it('[P-3.7] an error code outside ErrorCode is rejected', () => {
    const bad = { ...JSON.parse(encode('inferenceResponse', makeInferenceError())), code: 'OOPS' } as Json;
    expectError(decode('inferenceResponse', JSON.stringify(bad)), ErrorCode.INVALID_MESSAGE, /^inferenceResponse\.code: /);
  });

  it('[P-3.6] unknown chat role, empty messages, bad tool choice, too many stops', () => {
    const base = JSON.parse(encode('inferenceRequest', makeInferenceRequest())) as Json;
    expectError(decode('inferenceRequest', JSON.stringify(setPath(structuredClone(base), ['messages', 0, 'role'], 'robot'))), ErrorCode.INVALID_MESSAGE, 'inferenceRequest.messages[0].role: unknown role');
    expectError(decode('inferenceRequest', JSON.stringify({ ...base, messages: [] })), ErrorCode.INVALID_MESSAGE, /^inferenceRequest\.messages: /);
    expectError(decode('inferenceRequest', JSON.stringify({ ...base, toolChoice: 'sometimes' })), ErrorCode.INVALID_MESSAGE, 'inferenceRequest.toolChoice: matches none');
    expectError(decode('inferenceRequest', JSON.stringify({ ...base, stop: Array(9).fill('x') })), ErrorCode.INVALID_MESSAGE, /^inferenceRequest\.stop: /);
    expectError(decode('inferenceRequest', JSON.stringify({ ...base, priority: 10 })), ErrorCode.INVALID_MESSAGE, /^inferenceRequest\.priority: /);
    expectError(
      decode('inferenceRequest', JSON.stringify({ ...base, responseFormat: { type: 'json_schema' } })),
      ErrorCode.INVALID_MESSAGE,
      'inferenceRequest.responseFormat.json_schema: missing (expected object)',
    );
  });

  it('[P-3.4] duplicate model names, non-http url, bad sha256', () => {
    const base = raw('desired');
    const model = (base['models'] as Json[])[0] as Json;
    expectError(decode('desired', JSON.stringify({ ...base, models: [model, model] })), ErrorCode.INVALID_MESSAGE, 'desired.models: model names must be unique');
    expectError(decode('desired', JSON.stringify({ ...base, models: [{ ...model, url: 'ftp://models.example/tiny.gguf' }] })), ErrorCode.INVALID_MESSAGE, 'desired.models[0].url: Invalid URL');
    roundTrip('desired', makeDesired({ models: [makeDesiredModel({ url: 'file:///var/lib/flotilla/models/tiny-q8.gguf' })] }));
    const longUrl = `https://models.example/${'a'.repeat(2100)}`;
    expectError(decode('desired', JSON.stringify({ ...base, models: [{ ...model, url: longUrl }] })), ErrorCode.INVALID_MESSAGE, 'desired.models[0].url: expected string to have <=2048 characters');
    expectError(decode('desired', JSON.stringify({ ...base, models: [{ ...model, sha256: 'ABC' }] })), ErrorCode.INVALID_MESSAGE, 'desired.models[0].sha256: expected 64 lowercase hex characters');
  });

  it('[P-1.4] arrays are bounded', () => {
    const base = raw('hello');
    const gpu = ((base['hardware'] as Json)['gpus'] as Json[])[0];
    expectError(decode('hello', JSON.stringify(setPath(base, ['hardware', 'gpus'], Array(17).fill(gpu)))), ErrorCode.INVALID_MESSAGE, /^hello\.hardware\.gpus: .*<=16/);
  });

  it('[P-3.9] unknown command kind; rejected ack needs a code', () => {
    expectError(decode('command', JSON.stringify({ ...raw('command'), kind: 'reboot' })), ErrorCode.INVALID_MESSAGE, 'command.kind: unknown kind');
    expectError(decode('commandAck', JSON.stringify({ ...raw('commandAck'), status: 'rejected' })), ErrorCode.INVALID_MESSAGE, 'commandAck.code: a rejected or failed ack carries a code');
    roundTrip('commandAck', { ...fixtures.commandAck(), status: 'rejected', code: 'INVALID_MESSAGE', message: 'unknown kind' });
  });

  it('[P-3.10] event codes are UPPER_SNAKE_CASE', () => {
    expectError(decode('event', JSON.stringify({ ...raw('event'), code: 'model failed' })), ErrorCode.INVALID_MESSAGE, 'event.code: expected an UPPER_SNAKE_CASE code');
    roundTrip('event', { ...fixtures.event(), code: 'MODEL_EVICTED', level: 'info' });
  });

  it('[P-4.1] outbox seq starts at 1', () => {
    expectError(decode('usage', JSON.stringify({ ...raw('usage'), seq: 0 })), ErrorCode.INVALID_MESSAGE, /^usage\.seq: /);
  });
});

describe('[P-1.1] encode never sends an invalid message', () => {
  it('[P-1.1] throws ProtocolValidationError with the code and path', () => {
    const bad = { ...makeStatus(), ts: -1 };
    expect(() => encode('status', bad)).toThrow(ProtocolValidationError);
    try {
      encode('status', bad);
    } catch (err) {
      expect(err).toMatchObject({ code: ErrorCode.INVALID_MESSAGE, message: 'status.ts: expected number to be >=0' });
    }
  });

  it('[P-1.4] throws PAYLOAD_TOO_LARGE for a message within field bounds but over 1 MiB', () => {
    const content = 'y'.repeat(200 * 1024);
    const request = makeInferenceRequest({ messages: Array.from({ length: 6 }, () => ({ role: 'user' as const, content })) });
    expect(() => encode('inferenceRequest', request)).toThrow(expect.objectContaining({ code: ErrorCode.PAYLOAD_TOO_LARGE }));
  });
});

describe('[P-3.2] last will', () => {
  it('[P-3.2] is a retained QoS 1 offline status of this session', () => {
    const will = lastWill('dev-kiosk-01', 'sess-9', 1_790_000_000_000, '0.1.0');
    expect(will).toMatchObject({ topic: 'flotilla/v1/devices/dev-kiosk-01/status', qos: 1, retain: true });
    expect(decode('status', will.payload)).toEqual({
      ok: true,
      value: { v: 1, state: 'offline', reason: 'connection-lost', sessionId: 'sess-9', ts: 1_790_000_000_000, agentVersion: '0.1.0' },
    });
  });
});

describe('[P-5.1] validate for REST bodies', () => {
  it('[P-5.1] labels issues with the given root', () => {
    const result = validate(EnrollRequestSchema, { token: '' }, 'enroll');
    expectError(result, ErrorCode.INVALID_MESSAGE, 'enroll.token: expected string to have >=1 characters');
  });
});

describe('[P-2.2] decodeTopic', () => {
  it.each(TOPIC_KINDS)('[P-2.2] %s: returns device, kind and message', (kind) => {
    const message = fixtures[kind]();
    expect(decodeTopic(topics[kind]('dev-7'), encode(kind, message))).toEqual({ ok: true, value: { deviceId: 'dev-7', kind, value: message } });
  });

  it('[P-2.2] narrows on kind', () => {
    const result = decodeTopic(topics.telemetry('dev-7'), encode('telemetry', makeTelemetry({ seq: 9 })));
    if (!result.ok || result.value.kind !== 'telemetry') throw new Error('expected telemetry');
    expect(result.value.value.seq).toBe(9);
  });

  it('[P-2.2] an unknown topic is UNKNOWN_TOPIC, a bad payload keeps its code', () => {
    expectError(decodeTopic('flotilla/v1/devices/dev-7/firmware', '{}'), ErrorCode.UNKNOWN_TOPIC, '"flotilla/v1/devices/dev-7/firmware": not a flotilla/v1 device topic');
    expectError(decodeTopic(topics.status('dev-7'), '{'), ErrorCode.MALFORMED_JSON, 'status: malformed JSON');
  });
});
