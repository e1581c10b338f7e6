import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, ErrorCode, httpStatusFor, isErrorCode, isRetryable } from './errors.js';

const doc = readFileSync(fileURLToPath(new URL('../../../docs/protocol.md', import.meta.url)), 'utf8');

describe('[P-6] error codes', () => {
  it('[P-6] every code maps to itself and is known', () => {
    for (const code of ERROR_CODES) {
      expect(ErrorCode[code]).toBe(code);
      expect(isErrorCode(code)).toBe(true);
    }
    expect(isErrorCode('NOPE')).toBe(false);
    expect(isErrorCode('toString')).toBe(false);
    expect(isErrorCode(42)).toBe(false);
  });

  it('[P-6] the issue-required codes exist', () => {
    for (const code of [
      'MALFORMED_JSON', 'INVALID_MESSAGE', 'UNSUPPORTED_VERSION', 'PAYLOAD_TOO_LARGE', 'UNKNOWN_TOPIC',
      'MODEL_NOT_FOUND', 'DOWNLOAD_FAILED', 'CHECKSUM_MISMATCH', 'DISK_QUOTA_EXCEEDED', 'INSUFFICIENT_MEMORY', 'MODEL_LOAD_FAILED',
      'QUEUE_FULL', 'DEADLINE_EXCEEDED', 'CANCELLED', 'CONTEXT_LENGTH_EXCEEDED', 'INVALID_REQUEST', 'GENERATION_FAILED', 'DEVICE_DRAINING',
      'UNAUTHORIZED', 'FORBIDDEN', 'RATE_LIMITED', 'ENROLLMENT_TOKEN_INVALID', 'INTERNAL',
    ]) {
      expect(isErrorCode(code), code).toBe(true);
    }
  });

  it('[P-6] failover codes are retryable, client and protocol faults are not', () => {
    expect(isRetryable(ErrorCode.QUEUE_FULL)).toBe(true);
    expect(isRetryable(ErrorCode.DEVICE_DRAINING)).toBe(true);
    expect(isRetryable(ErrorCode.MODEL_NOT_FOUND)).toBe(true);
    expect(isRetryable(ErrorCode.INVALID_MESSAGE)).toBe(false);
    expect(isRetryable(ErrorCode.CANCELLED)).toBe(false);
    expect(isRetryable(ErrorCode.DEADLINE_EXCEEDED)).toBe(false);
    expect(isRetryable(ErrorCode.ENROLLMENT_TOKEN_INVALID)).toBe(false);
  });

  it('[P-6] docs/protocol.md error table matches isRetryable and httpStatusFor', () => {
    const rows = doc
      .split('\n')
      .filter((line) => /^\| `[A-Z_]+` \| (yes|no) \|/.test(line))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    expect(rows.map((r) => r[1]?.replaceAll('`', '')).sort()).toEqual([...ERROR_CODES].sort());
    for (const row of rows) {
      const code = row[1]?.replaceAll('`', '') as ErrorCode;
      expect(row[2], code).toBe(isRetryable(code) ? 'yes' : 'no');
      expect(row[3], code).toBe(String(httpStatusFor(code)));
    }
  });
});
