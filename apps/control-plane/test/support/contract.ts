import { isDeepStrictEqual } from 'node:util';
import { ApiErrorBodySchema, type ApiErrorBody } from '@flotilla/protocol';
import type { z } from 'zod';
import type { ControlPlane } from '../../src/app/create-app.js';
import { api } from './control-plane.js';

type Init = Parameters<typeof api>[2];
type Answer<T> = { status: number; body: T; headers: Headers };

/**
 * A call the test expects to succeed: a 2xx status and a body that is exactly what its contract schema
 * (`@flotilla/protocol`) describes. Parsing must change nothing: a default filled in or a key stripped means the
 * answer left a field out or sent one the contract does not name, and fails like a wrong type does.
 */
export async function apiOk<S extends z.ZodType>(schema: S, cp: ControlPlane, path: string, init?: Init): Promise<Answer<z.output<S>>> {
  const res = await api(cp, path, init);
  if (res.status < 200 || res.status >= 300) throw new Error(`${path}: expected a 2xx answer, got ${res.status} ${JSON.stringify(res.body)}`);
  const parsed = schema.safeParse(res.body);
  if (!parsed.success) throw new Error(`${path}: the answer does not match its schema: ${parsed.error.message}\n${JSON.stringify(res.body)}`);
  if (!isDeepStrictEqual(parsed.data, res.body)) {
    throw new Error(`${path}: the answer is not in its schema's output form:\n sent   ${JSON.stringify(res.body)}\n parsed ${JSON.stringify(parsed.data)}`);
  }
  return { ...res, body: parsed.data };
}

/** A call the test expects to be refused: a non-2xx status with the REST error body [P-5.2]. */
export async function apiError(cp: ControlPlane, path: string, init?: Init): Promise<Answer<ApiErrorBody>> {
  const res = await api(cp, path, init);
  if (res.status >= 200 && res.status < 300) throw new Error(`${path}: expected a refusal, got ${res.status} ${JSON.stringify(res.body)}`);
  return { ...res, body: ApiErrorBodySchema.parse(res.body) };
}
