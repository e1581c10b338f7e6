import { Prisma } from '../../generated/prisma/client.js';

/** Prisma's "Unable to start a transaction in the given time": the pool was busy, nothing was written. */
export const TRANSACTION_START_TIMEOUT = 'P2028';

export function isTransactionStartTimeout(error: unknown): boolean {
  return error instanceof Prisma.PrismaClientKnownRequestError && error.code === TRANSACTION_START_TIMEOUT;
}

/**
 * Runs `work` again (with a growing, jittered pause) while it fails only because no transaction could start in time:
 * a busy pool is a reason to wait, not to drop the write. Other errors, and the last timeout, are thrown.
 */
export async function retryTransactionStart<T>(work: () => Promise<T>, { attempts = 6, baseDelayMs = 100 }: { attempts?: number; baseDelayMs?: number } = {}): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= attempts || !isTransactionStartTimeout(error)) throw error;
      const delay = baseDelayMs * 2 ** (attempt - 1);
      await new Promise((resolve) => setTimeout(resolve, delay / 2 + Math.random() * delay));
    }
  }
}
