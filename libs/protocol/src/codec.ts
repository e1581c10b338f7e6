import type { z } from 'zod';
import { ErrorCode, type ProtocolError, type ProtocolIssue } from './errors.js';
import { TOPIC_SPECS, type MessageOf, type TopicKind } from './messages.js';
import { parseTopic, topicFor } from './topics.js';
import type { Status } from './schemas/status.js';
import { MAX_PAYLOAD_BYTES, PROTOCOL_VERSION } from './version.js';

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; error: ProtocolError };

export interface DecodeOptions {
  /** defaults to MAX_PAYLOAD_BYTES */
  maxBytes?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

function fail(code: ErrorCode, path: string, what: string, issues?: ProtocolIssue[]): { ok: false; error: ProtocolError } {
  return { ok: false, error: { code, message: `${path}: ${what}`, issues: issues ?? [{ path, message: what }] } };
}

function formatPath(root: string, path: ReadonlyArray<PropertyKey>): string {
  let out = root;
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

function issueText(issue: z.core.$ZodIssue): string {
  // zod prefixes problems with "Invalid input: " etc.; the path already says where.
  const text = issue.message.replace(/^(Invalid input|Invalid option|Too big|Too small): /, '');
  const missing = 'input' in issue && issue.input === undefined;
  if (issue.code === 'invalid_union') {
    if (missing) return 'missing';
    return 'discriminator' in issue && typeof issue.discriminator === 'string'
      ? `unknown ${issue.discriminator}`
      : 'matches none of the allowed shapes';
  }
  if (missing && issue.code === 'invalid_type') return `missing (expected ${issue.expected})`;
  if (missing && issue.code === 'invalid_value') return `missing (${text})`;
  return text === 'Invalid input' ? 'invalid value' : text;
}

function toIssues(root: string, error: z.ZodError): ProtocolIssue[] {
  return error.issues.map((issue) => ({ path: formatPath(root, issue.path), message: issueText(issue) }));
}

/** UTF-8 byte length, or -1 when the text is certainly within `limit` (a UTF-16 unit is at most 3 bytes). */
function utf8Length(text: string, limit = MAX_PAYLOAD_BYTES): number {
  return text.length * 3 <= limit ? -1 : encoder.encode(text).byteLength;
}

/**
 * Validate an already-parsed value against a schema. `label` starts every issue path (e.g. `enroll`).
 * [P-1.3] a `v` other than 1 is UNSUPPORTED_VERSION, any other mismatch INVALID_MESSAGE.
 */
export function validate<S extends z.ZodType>(schema: S, value: unknown, label: string): DecodeResult<z.output<S>> {
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && 'v' in value) {
    const v = (value).v;
    if (typeof v === 'number' && v !== PROTOCOL_VERSION) {
      return fail(ErrorCode.UNSUPPORTED_VERSION, formatPath(label, ['v']), `unsupported protocol version ${v} (expected ${PROTOCOL_VERSION})`);
    }
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return { ok: true, value: parsed.data };
  // Parse again with inputs in the issues (to tell "missing" from "wrong"); only on failure, it disables zod's fast path.
  const detailed = schema.safeParse(value, { reportInput: true });
  const issues = toIssues(label, detailed.success ? parsed.error : detailed.error);
  const first = issues[0] ?? { path: label, message: 'invalid value' };
  return fail(ErrorCode.INVALID_MESSAGE, first.path, first.message, issues);
}

/**
 * Decode an MQTT payload of a topic kind: size limit [P-1.4], UTF-8 and JSON [P-1.1], version [P-1.3], schema.
 * Never throws.
 */
export function decode<K extends TopicKind>(
  kind: K,
  payload: Uint8Array | string,
  options: DecodeOptions = {},
): DecodeResult<MessageOf<K>> {
  const maxBytes = options.maxBytes ?? MAX_PAYLOAD_BYTES;
  let text: string;
  if (typeof payload === 'string') {
    const bytes = utf8Length(payload, maxBytes);
    if (bytes > maxBytes) return fail(ErrorCode.PAYLOAD_TOO_LARGE, kind, `payload is ${bytes} bytes, limit ${maxBytes}`);
    text = payload;
  } else {
    if (payload.byteLength > maxBytes) {
      return fail(ErrorCode.PAYLOAD_TOO_LARGE, kind, `payload is ${payload.byteLength} bytes, limit ${maxBytes}`);
    }
    try {
      text = decoder.decode(payload);
    } catch {
      return fail(ErrorCode.MALFORMED_JSON, kind, 'payload is not valid UTF-8');
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return fail(ErrorCode.MALFORMED_JSON, kind, `malformed JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  return validate(TOPIC_SPECS[kind].schema, json, kind) as DecodeResult<MessageOf<K>>;
}

/** A decoded message with the device and kind its topic names. */
export type TopicMessage = { [K in TopicKind]: { deviceId: string; kind: K; value: MessageOf<K> } }[TopicKind];

/**
 * Decode a message received on any protocol topic (e.g. from one `flotilla/v1/devices/+/...` subscription):
 * `UNKNOWN_TOPIC` when the topic is not one of [P-2.2], else as `decode`.
 */
export function decodeTopic(topic: string, payload: Uint8Array | string, options: DecodeOptions = {}): DecodeResult<TopicMessage> {
  const parsed = parseTopic(topic);
  if (parsed === null) return fail(ErrorCode.UNKNOWN_TOPIC, JSON.stringify(topic.slice(0, 200)), 'not a flotilla/v1 device topic');
  const decoded = decode(parsed.kind, payload, options);
  if (!decoded.ok) return decoded;
  return { ok: true, value: { deviceId: parsed.deviceId, kind: parsed.kind, value: decoded.value } as TopicMessage };
}

/** Thrown by `encode` for a message that does not satisfy its schema: a bug in the sender. */
export class ProtocolValidationError extends Error implements ProtocolError {
  readonly code: ErrorCode;
  readonly issues: ProtocolIssue[];
  constructor(error: ProtocolError) {
    super(error.message);
    this.name = 'ProtocolValidationError';
    this.code = error.code;
    this.issues = error.issues;
  }
}

/**
 * Validate and serialise a message to its JSON payload. [P-1.1] Unknown keys are dropped; an invalid or oversized
 * message throws ProtocolValidationError, so nothing invalid is ever sent.
 */
export function encode<K extends TopicKind>(kind: K, value: MessageOf<K>): string {
  const checked = validate(TOPIC_SPECS[kind].schema, value, kind);
  if (!checked.ok) throw new ProtocolValidationError(checked.error);
  const payload = JSON.stringify(checked.value);
  const bytes = utf8Length(payload);
  if (bytes > MAX_PAYLOAD_BYTES) {
    throw new ProtocolValidationError(fail(ErrorCode.PAYLOAD_TOO_LARGE, kind, `payload is ${bytes} bytes, limit ${MAX_PAYLOAD_BYTES}`).error);
  }
  return payload;
}

export interface LastWill {
  topic: string;
  payload: string;
  qos: 1;
  retain: true;
}

/**
 * [P-3.2] The MQTT last will an agent registers on connect: a retained `offline` status for this connection's
 * sessionId, so the broker marks the device offline when the connection drops.
 */
export function lastWill(deviceId: string, sessionId: string, ts: number, agentVersion?: string): LastWill {
  const status: Status = { v: PROTOCOL_VERSION, state: 'offline', sessionId, ts, reason: 'connection-lost' };
  if (agentVersion !== undefined) status.agentVersion = agentVersion;
  return { topic: topicFor('status', deviceId), payload: encode('status', status), qos: 1, retain: true };
}
