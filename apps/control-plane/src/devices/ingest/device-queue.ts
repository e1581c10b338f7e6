import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from '../../platform/tokens.js';

/**
 * Runs work for one device strictly in order (hello before its status, entries after the hello that may reset the
 * outbox cursor), while different devices proceed concurrently. A failing task is logged and does not block the next.
 */
@Injectable()
export class DeviceQueue {
  private readonly tails = new Map<string, Promise<void>>();

  constructor(@Inject(LOGGER) private readonly logger: Logger) {}

  run<T>(deviceId: string, task: () => T | Promise<T>): Promise<T> {
    const previous = this.tails.get(deviceId) ?? Promise.resolve();
    const result = previous.then(task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(deviceId, tail);
    // `tail` never rejects (both branches above resolve), so this chain cannot either.
    tail
      .then(() => {
        if (this.tails.get(deviceId) === tail) this.tails.delete(deviceId);
      })
      .catch(() => undefined);
    return result;
  }

  /** Like `run`, for fire-and-forget callers: errors are logged with the device id and counted by `onError`. */
  post(deviceId: string, what: string, task: () => unknown, onError?: (error: unknown) => void): void {
    this.run(deviceId, task).catch((error: unknown) => {
      onError?.(error);
      this.logger.error({ err: error, deviceId }, `${what} failed`);
    });
  }

  /** Resolves when every task queued so far has finished. */
  async idle(): Promise<void> {
    while (this.tails.size > 0) await Promise.all([...this.tails.values()]);
  }
}
