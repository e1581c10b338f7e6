import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './fleet.js';

export interface MosquittoOptions {
  port?: number;
  /** default /usr/sbin/mosquitto */
  binary?: string;
  /** extra lines for mosquitto.conf */
  config?: string[];
  /** told of the process (e.g. to kill it when the caller is interrupted) */
  onChild?: (child: ChildProcess) => void;
}

/**
 * A plain Mosquitto (allow_anonymous, no persistence) on loopback, for comparing the control plane's broker with the
 * same simulated clients (`behaviour.mode: 'plain'`).
 */
export class MosquittoProcess {
  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    private readonly dir: string,
    readonly exited: Promise<number | null>,
  ) {}

  static async start(options: MosquittoOptions = {}): Promise<MosquittoProcess> {
    const binary = options.binary ?? process.env.FLOTILLA_MOSQUITTO ?? '/usr/sbin/mosquitto';
    if (!existsSync(binary)) throw new Error(`mosquitto not found at ${binary}`);
    const port = options.port ?? (await freePort());
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-mosquitto-'));
    const conf = join(dir, 'mosquitto.conf');
    await writeFile(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'max_keepalive 3600', ...(options.config ?? [])].join('\n') + '\n');
    const child = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    options.onChild?.(child);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-2000)));
    const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
    const mosquitto = new MosquittoProcess(child, port, dir, exited);
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await mosquitto.stop();
        throw new Error(`mosquitto did not start on port ${port}: ${stderr}`);
      }
      await new Promise((done) => setTimeout(done, 50));
    }
    return mosquitto;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** exited (or killed) */
  get stopped(): boolean {
    return this.child.exitCode !== null || this.child.signalCode !== null;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    await this.exited;
    await rm(this.dir, { recursive: true, force: true });
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}
