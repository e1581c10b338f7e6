import { Prisma } from '../../generated/prisma/client.js';

/** Prisma's "Unable to start a transaction in the given time": the pool was busy, nothing was written. */
export const TRANSACTION_START_TIMEOUT = 'P2028';

export function isTransactionStartTimeout(error: unknown): boolean {
  return error instanceof Prisma.PrismaClientKnownRequestError && error.code === TRANSACTION_START_TIMEOUT;
}

/**
 * Prisma codes that say the database could not be reached or the work could not run now, with nothing committed:
 * can't reach / timed out / closed the connection (P1001, P1002, P1008, P1017), no pooled connection in time (P2024),
 * no transaction in time (P2028), a write conflict or deadlock to retry (P2034).
 */
const TRANSIENT_PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2028', 'P2034']);
/** The same said by the driver: socket errors and PostgreSQL's connection, shutdown and serialization classes. */
const TRANSIENT_DRIVER_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', '57P01', '57P02', '57P03', '40001', '40P01']);

/**
 * True when `error` means "try again later": the pool or the server was busy or away, and the transaction did not
 * commit. Other errors (a constraint, a bug) would fail the same way again.
 */
export function isTransientDatabaseError(error: unknown): boolean {
  for (let cause: unknown = error, depth = 0; cause !== undefined && cause !== null && depth < 5; depth++) {
    if (cause instanceof Prisma.PrismaClientKnownRequestError && TRANSIENT_PRISMA_CODES.has(cause.code)) return true;
    if (cause instanceof Prisma.PrismaClientInitializationError) return true;
    if (typeof cause !== 'object') return false;
    const { code, originalCode } = cause as { code?: unknown; originalCode?: unknown };
    if (typeof code === 'string' && (TRANSIENT_DRIVER_CODES.has(code) || code.startsWith('08'))) return true;
    if (typeof originalCode === 'string' && (TRANSIENT_DRIVER_CODES.has(originalCode) || originalCode.startsWith('08'))) return true;
    if (cause instanceof Error && /Connection terminated|connection (was )?closed|Unable to start a transaction/i.test(cause.message)) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}

/** The pause before attempt `attempt + 1`: doubling from `baseDelayMs`, jittered to 50-150 % so callers spread out. */
export function backoffDelay(attempt: number, baseDelayMs: number, maxDelayMs = 10_000): number {
  const delay = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
  return delay / 2 + Math.random() * delay;
}

/**
 * Runs `work` again (with a growing, jittered pause) while it fails only because no transaction could start in time:
 * a busy pool is a reason to wait, not to drop the write. Other errors, and the last timeout, are thrown.
 */
export async function retryTransactionStart<T>(work: () => Promise<T>, options: { attempts?: number; baseDelayMs?: number } = {}): Promise<T> {
  return retryWhile(work, isTransactionStartTimeout, options);
}

/** Like retryTransactionStart, for every transient error (busy pool, lost connection, deadlock). */
export async function retryTransient<T>(
  work: () => Promise<T>,
  options: { attempts?: number; baseDelayMs?: number; onRetry?: (error: unknown, attempt: number) => void } = {},
): Promise<T> {
  return retryWhile(work, isTransientDatabaseError, options);
}

async function retryWhile<T>(
  work: () => Promise<T>,
  retryable: (error: unknown) => boolean,
  { attempts = 6, baseDelayMs = 100, onRetry }: { attempts?: number; baseDelayMs?: number; onRetry?: (error: unknown, attempt: number) => void },
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= attempts || !retryable(error)) throw error;
      onRetry?.(error, attempt);
      await new Promise((resolve) => setTimeout(resolve, backoffDelay(attempt, baseDelayMs)));
    }
  }
}
