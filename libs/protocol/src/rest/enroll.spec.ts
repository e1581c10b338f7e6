import { describe, expect, it } from 'vitest';
import { validate } from '../codec.js';
import { ErrorCode } from '../errors.js';
import { makeEnrollRequest, makeEnrollResponse } from '../testing/factories.js';
import { ENROLL_PATH, EnrollRequestSchema, EnrollResponseSchema } from './enroll.js';
import { ApiErrorBodySchema } from './errors.js';

describe('[P-5.1] enrollment REST contract', () => {
  it('[P-5.1] path', () => {
    expect(ENROLL_PATH).toBe('/api/v1/enroll');
  });

  it('[P-5.1] request and response round-trip through JSON', () => {
    const request = makeEnrollRequest();
    expect(validate(EnrollRequestSchema, JSON.parse(JSON.stringify(request)), 'enroll')).toEqual({ ok: true, value: request });
    expect(validate(EnrollRequestSchema, { token: 't' }, 'enroll')).toEqual({ ok: true, value: { token: 't' } });
    const response = makeEnrollResponse();
    expect(validate(EnrollResponseSchema, JSON.parse(JSON.stringify(response)), 'enroll')).toEqual({ ok: true, value: response });
  });

  it('[P-5.1] rejects a missing token, an oversized token, a bad device id, an http broker url', () => {
    const cases: [unknown, typeof EnrollRequestSchema | typeof EnrollResponseSchema, string][] = [
      [{ name: 'x' }, EnrollRequestSchema, 'enroll.token: missing (expected string)'],
      [{ token: 'x'.repeat(513) }, EnrollRequestSchema, 'enroll.token: expected string to have <=512 characters'],
      [{ token: 't', hardware: { cpu: {} } }, EnrollRequestSchema, 'enroll.hardware.cpu.model: missing (expected string)'],
      [{ ...makeEnrollResponse(), deviceId: 'a/b' }, EnrollResponseSchema, 'enroll.deviceId: expected a device id'],
      [{ ...makeEnrollResponse(), mqtt: { username: 'u', password: 'p', urls: ['http://x:1883'] } }, EnrollResponseSchema, 'enroll.mqtt.urls[0]: Invalid URL'],
      [{ ...makeEnrollResponse(), mqtt: { username: 'u', password: 'p', urls: [] } }, EnrollResponseSchema, 'enroll.mqtt.urls: expected array to have >=1 items'],
    ];
    for (const [body, schema, message] of cases) {
      const result = validate(schema, body, 'enroll');
      expect(result.ok, message).toBe(false);
      if (!result.ok) {
        expect(result.error.code).toBe(ErrorCode.INVALID_MESSAGE);
        expect(result.error.message.startsWith(message), result.error.message).toBe(true);
      }
    }
  });
});

describe('[P-5.2] REST error body', () => {
  it('[P-5.2] accepts a shared error code only', () => {
    const body = { error: { code: 'ENROLLMENT_TOKEN_INVALID', message: 'token expired', details: { requestId: 'r1' } } };
    expect(ApiErrorBodySchema.parse(body)).toEqual(body);
    expect(ApiErrorBodySchema.safeParse({ error: { code: 'TEAPOT', message: 'x' } }).success).toBe(false);
  });
});
