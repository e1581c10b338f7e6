import type { Logger } from 'pino';

/**
 * A background task that runs at start and every `intervalMs`, one run at a time: a tick that comes while the previous
 * timed run is still going is skipped, not queued, so a run slower than the interval never builds a backlog. Its timer
 * never keeps the process alive, and `stop()` waits for the run in progress.
 */
export class PeriodicJob {
  private timer: NodeJS.Timeout | undefined;
  private last: Promise<unknown> = Promise.resolve();
  private timedRunInFlight = false;

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
    const tick = (): void => {
      if (this.timedRunInFlight) {
        this.logger.debug(`${this.what}: the previous run is still going, skipping this tick`);
        return;
      }
      this.timedRunInFlight = true;
      this.serialize(task).then(
        () => {
          this.timedRunInFlight = false;
        },
        (error: unknown) => {
          this.timedRunInFlight = false;
          this.logger.error({ err: error }, `${this.what} failed`);
        },
      );
    };
    tick();
    this.timer = setInterval(tick, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.last.catch(() => undefined);
  }
}
