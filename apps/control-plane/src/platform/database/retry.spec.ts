import { describe, expect, it } from 'vitest';
import { Prisma } from '../../generated/prisma/client.js';
import { isTransientDatabaseError, retryTransient } from './retry.js';

const known = (code: string) => new Prisma.PrismaClientKnownRequestError(`error ${code}`, { code, clientVersion: 'test' });

describe('isTransientDatabaseError', () => {
  it('says yes to a busy pool, a lost connection or a deadlock, and no to errors that would fail again', () => {
    for (const code of ['P2028', 'P2024', 'P1001', 'P1017', 'P2034']) expect(isTransientDatabaseError(known(code)), code).toBe(true);
    expect(isTransientDatabaseError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isTransientDatabaseError(new Error('wrapped', { cause: Object.assign(new Error('terminating connection'), { code: '57P01' }) }))).toBe(true);
    expect(isTransientDatabaseError(known('P2002'))).toBe(false);
    expect(isTransientDatabaseError(new TypeError('x is undefined'))).toBe(false);
    expect(isTransientDatabaseError(undefined)).toBe(false);
  });
});

describe('retryTransient', () => {
  it('runs the work again after transient failures, and throws other errors at once', async () => {
    let calls = 0;
    const retried: number[] = [];
    const value = await retryTransient(
      async () => {
        calls += 1;
        if (calls < 3) throw known('P2028');
        return 'stored';
      },
      { baseDelayMs: 1, onRetry: (_error, attempt) => retried.push(attempt) },
    );
    expect({ value, calls, retried }).toEqual({ value: 'stored', calls: 3, retried: [1, 2] });

    let failing = 0;
    await expect(
      retryTransient(async () => {
        failing += 1;
        throw known('P2002');
      }),
    ).rejects.toMatchObject({ code: 'P2002' });
    expect(failing).toBe(1);
    await expect(retryTransient(() => Promise.reject(known('P2028')), { attempts: 2, baseDelayMs: 1 })).rejects.toMatchObject({ code: 'P2028' });
  });
});
