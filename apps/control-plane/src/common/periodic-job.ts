import type { Logger } from 'pino';

/**
 * A background task that runs at start and every `intervalMs`, one run at a time (a slow run delays the next instead of
 * overlapping it); its timer never keeps the process alive, and `stop()` waits for the run in progress.
 */
export class PeriodicJob {
  private timer: NodeJS.Timeout | undefined;
  private last: Promise<unknown> = Promise.resolve();

  constructor(
    /** e.g. `retention sweep`: logged as `<what> failed` */
    private readonly what: string,
    private readonly logger: Logger,
  ) {}

  /** Runs `task` once the previous run (timed or direct) has settled. The task given to `start` must not call this: it would wait for itself. */
  serialize<T>(task: () => Promise<T>): Promise<T> {
    const run = this.last.catch(() => undefined).then(task);
    this.last = run;
    return run;
  }

  start(intervalMs: number, task: () => Promise<unknown>): void {
    const tick = () => void this.serialize(task).catch((error: unknown) => this.logger.error({ err: error }, `${this.what} failed`));
    tick();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.last.catch(() => undefined);
  }
}
