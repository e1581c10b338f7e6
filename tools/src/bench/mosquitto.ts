import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../sim/fleet.js';
import { trackChild } from './cleanup.js';
import { pollUntil } from './stats.js';

export const MOSQUITTO_BINARY = process.env.FLOTILLA_MOSQUITTO ?? '/usr/sbin/mosquitto';

export interface MosquittoProcess {
  port: number;
  url: string;
  pid: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

/**
 * A Mosquitto the benchmark owns: its own config file (anonymous clients, no persistence, no connection limit) on a
 * free loopback port, so it is fed exactly the clients the control plane gets and nothing else.
 */
export async function startMosquitto(options: { port?: number; binary?: string } = {}): Promise<MosquittoProcess> {
  const binary = options.binary ?? MOSQUITTO_BINARY;
  if (!existsSync(binary)) throw new Error(`mosquitto not found at ${binary} (set FLOTILLA_MOSQUITTO)`);
  const port = options.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-mosquitto-'));
  const conf = join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence false',
      'max_connections -1',
      'max_keepalive 65535',
      'max_inflight_messages 0',
      'max_queued_messages 10000',
      'set_tcp_nodelay true',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      '',
    ].join('\n'),
  );
  const child = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  trackChild(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const ready = await pollUntil(
    () =>
      new Promise<boolean>((done) => {
        if (child.exitCode !== null) return done(false);
        const s = connect(port, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          done(true);
        });
        s.once('error', () => done(false));
      }),
    10_000,
    50,
  );
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
    await rm(dir, { recursive: true, force: true });
  };
  if (!ready || child.pid === undefined) {
    await stop();
    throw new Error(`mosquitto did not start on port ${port}: ${stderr.trim()}`);
  }
  return { port, url: `mqtt://127.0.0.1:${port}`, pid: child.pid, process: child, stop };
}
