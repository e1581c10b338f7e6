/**
 * Error codes shared by the control plane, the device agent and the dashboard. [P-6]
 * One list for MQTT payloads (inference errors, command acks, events, model states) and REST error bodies.
 */
export const ErrorCode = {
  // Protocol [P-6.1]
  MALFORMED_JSON: 'MALFORMED_JSON',
  INVALID_MESSAGE: 'INVALID_MESSAGE',
  UNSUPPORTED_VERSION: 'UNSUPPORTED_VERSION',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  UNKNOWN_TOPIC: 'UNKNOWN_TOPIC',
  // Device and model [P-6.2]
  MODEL_NOT_FOUND: 'MODEL_NOT_FOUND',
  DOWNLOAD_FAILED: 'DOWNLOAD_FAILED',
  CHECKSUM_MISMATCH: 'CHECKSUM_MISMATCH',
  DISK_QUOTA_EXCEEDED: 'DISK_QUOTA_EXCEEDED',
  INSUFFICIENT_MEMORY: 'INSUFFICIENT_MEMORY',
  MODEL_LOAD_FAILED: 'MODEL_LOAD_FAILED',
  // Inference [P-6.3]
  QUEUE_FULL: 'QUEUE_FULL',
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  CANCELLED: 'CANCELLED',
  CONTEXT_LENGTH_EXCEEDED: 'CONTEXT_LENGTH_EXCEEDED',
  INVALID_REQUEST: 'INVALID_REQUEST',
  GENERATION_FAILED: 'GENERATION_FAILED',
  DEVICE_DRAINING: 'DEVICE_DRAINING',
  DEVICE_OFFLINE: 'DEVICE_OFFLINE',
  NO_DEVICE_AVAILABLE: 'NO_DEVICE_AVAILABLE',
  // Auth and REST [P-6.4]
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  RATE_LIMITED: 'RATE_LIMITED',
  ENROLLMENT_TOKEN_INVALID: 'ENROLLMENT_TOKEN_INVALID',
  NOT_FOUND: 'NOT_FOUND',
  CONFLICT: 'CONFLICT',
  // Anything else [P-6.5]
  INTERNAL: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const ERROR_CODES = Object.values(ErrorCode) as [ErrorCode, ...ErrorCode[]];

/**
 * [P-6] Codes where the same request may succeed if sent again later or to another device.
 * A device-side inference error with one of these codes lets the gateway fail over.
 */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.MODEL_NOT_FOUND,
  ErrorCode.DOWNLOAD_FAILED,
  ErrorCode.CHECKSUM_MISMATCH,
  ErrorCode.INSUFFICIENT_MEMORY,
  ErrorCode.MODEL_LOAD_FAILED,
  ErrorCode.QUEUE_FULL,
  ErrorCode.GENERATION_FAILED,
  ErrorCode.DEVICE_DRAINING,
  ErrorCode.DEVICE_OFFLINE,
  ErrorCode.NO_DEVICE_AVAILABLE,
  ErrorCode.RATE_LIMITED,
  ErrorCode.INTERNAL,
]);

export function isRetryable(code: ErrorCode): boolean {
  return RETRYABLE.has(code);
}

const HTTP_STATUS: Record<ErrorCode, number> = {
  MALFORMED_JSON: 400,
  INVALID_MESSAGE: 400,
  UNSUPPORTED_VERSION: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNKNOWN_TOPIC: 400,
  MODEL_NOT_FOUND: 404,
  DOWNLOAD_FAILED: 502,
  CHECKSUM_MISMATCH: 502,
  DISK_QUOTA_EXCEEDED: 507,
  INSUFFICIENT_MEMORY: 503,
  MODEL_LOAD_FAILED: 503,
  QUEUE_FULL: 429,
  DEADLINE_EXCEEDED: 504,
  CANCELLED: 499,
  CONTEXT_LENGTH_EXCEEDED: 400,
  INVALID_REQUEST: 400,
  GENERATION_FAILED: 500,
  DEVICE_DRAINING: 503,
  DEVICE_OFFLINE: 503,
  NO_DEVICE_AVAILABLE: 503,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  RATE_LIMITED: 429,
  ENROLLMENT_TOKEN_INVALID: 401,
  NOT_FOUND: 404,
  CONFLICT: 409,
  INTERNAL: 500,
};

/** The HTTP status a REST or gateway response uses for this code. [P-6] */
export function httpStatusFor(code: ErrorCode): number {
  return HTTP_STATUS[code];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(HTTP_STATUS, value);
}

/** One validation problem: where (dotted path from the message kind) and what. */
export interface ProtocolIssue {
  path: string;
  message: string;
}

/** What `decode`/`encode`/`validate` return on failure. `message` names the first problem on one line. */
export interface ProtocolError {
  code: ErrorCode;
  message: string;
  issues: ProtocolIssue[];
}
