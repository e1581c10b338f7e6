import { Session } from 'node:inspector';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';

/**
 * On-demand CPU profiles of the running control plane (FLOTILLA_CPU_PROFILE_DIR): each SIGUSR2 starts a profile,
 * the next one writes it as `<dir>/cpu-<ISO time>.cpuprofile` (Chrome DevTools / speedscope format). `--cpu-prof`
 * covers the whole process life; this covers one window of it, e.g. a fleet's steady state after its connect storm.
 * The inspector session is in process: no port is opened.
 */
export class CpuProfiler {
  private readonly session = new Session();
  private running = false;
  private busy: Promise<void> = Promise.resolve();
  private readonly onSignal = () => {
    this.busy = this.busy
      .then(async () => {
        await this.toggle();
      })
      .catch((error: unknown) => this.logger.error({ err: error }, 'CPU profile failed'));
  };

  constructor(
    private readonly dir: string,
    private readonly logger: Logger,
    private readonly signal: NodeJS.Signals = 'SIGUSR2',
  ) {}

  arm(): void {
    this.session.connect();
    process.on(this.signal, this.onSignal);
    this.logger.info({ dir: this.dir, signal: this.signal }, 'CPU profiler armed: send the signal to start a profile, again to write it');
  }

  async disarm(): Promise<void> {
    process.off(this.signal, this.onSignal);
    await this.busy;
    if (this.running) await this.toggle();
    this.session.disconnect();
  }

  /** starts a profile, or stops the running one and returns the file it wrote */
  async toggle(): Promise<string | undefined> {
    if (!this.running) {
      await this.post('Profiler.enable');
      await this.post('Profiler.start');
      this.running = true;
      this.logger.info('CPU profile started');
      return undefined;
    }
    const result = (await this.post('Profiler.stop')) as { profile: unknown };
    this.running = false;
    await mkdir(this.dir, { recursive: true });
    const file = join(this.dir, `cpu-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
    await writeFile(file, JSON.stringify(result.profile));
    this.logger.info({ file }, 'CPU profile written');
    return file;
  }

  private post(method: string): Promise<unknown> {
    return new Promise((resolve, reject) => this.session.post(method, (error, result) => (error ? reject(error) : resolve(result))));
  }
}
