import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../sim/fleet.js';
import { trackChild } from './cleanup.js';
import { pollUntil } from './stats.js';

/** The built control plane: `npx nx build @flotilla/control-plane`. */
export const CONTROL_PLANE_MAIN = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../apps/control-plane/dist/main.js');

export interface ControlPlaneOptions {
  dataDir: string;
  /** PostgreSQL URL; unset = embedded PGlite in dataDir */
  databaseUrl?: string;
  env?: Record<string, string>;
  logLevel?: string;
  /** forward the control plane's stderr (its warnings and errors) */
  inheritStderr?: boolean;
  main?: string;
  startTimeoutMs?: number;
}

export interface InitialCredentials {
  adminEmail: string;
  adminPassword: string;
  apiKey: string;
}

/**
 * The built control plane as a child process (tools never import apps), on free loopback ports that stay the same
 * across `kill()` + `start()`, so devices reconnect to the restarted process as they would in the field.
 * A bridge until the simulator's own `ControlPlaneProcess` lands; same idea, kept small.
 */
export class BenchControlPlane {
  httpPort = 0;
  mqttPort = 0;
  child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** stderr lines of error level, counted (a crash or a logged error under load is a finding) */
  errorLines: string[] = [];
  exits: { code: number | null; signal: string | null; at: number }[] = [];

  constructor(private readonly options: ControlPlaneOptions) {}

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }
  get mqttUrl(): string {
    return `mqtt://127.0.0.1:${this.mqttPort}`;
  }
  get pid(): number {
    if (this.child?.pid === undefined) throw new Error('control plane not running');
    return this.child.pid;
  }
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the process and resolves once `/healthz` answers. */
  async start(): Promise<void> {
    const main = this.options.main ?? CONTROL_PLANE_MAIN;
    if (!existsSync(main)) throw new Error(`control plane not built at ${main}: run npx nx build @flotilla/control-plane`);
    if (this.httpPort === 0) this.httpPort = await freePort();
    if (this.mqttPort === 0) this.mqttPort = await freePort();
    await mkdir(this.options.dataDir, { recursive: true });
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      FLOTILLA_DATA_DIR: this.options.dataDir,
      FLOTILLA_HTTP_HOST: '127.0.0.1',
      FLOTILLA_HTTP_PORT: String(this.httpPort),
      FLOTILLA_MQTT_HOST: '127.0.0.1',
      FLOTILLA_MQTT_PORT: String(this.mqttPort),
      FLOTILLA_LOG_LEVEL: this.options.logLevel ?? 'warn',
      ...this.options.env,
    };
    if (this.options.databaseUrl) env.DATABASE_URL = this.options.databaseUrl;
    else delete env.DATABASE_URL;
    const child = spawn(process.execPath, [main], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    trackChild(child);
    this.exited = new Promise<void>((done) =>
      child.once('exit', (code, signal) => {
        this.exits.push({ code, signal, at: Date.now() });
        done();
      }),
    );
    let pending = '';
    child.stderr?.on('data', (d: Buffer) => {
      if (this.options.inheritStderr) process.stderr.write(d);
      pending += d.toString();
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        // pino JSON: level 50 = error, 60 = fatal; plain text lines (start-up failures) count too
        if (/"level":(50|60)/.test(line) || line.startsWith('flotilla:')) this.errorLines.push(line.slice(0, 2000));
      }
    });
    const ok = await pollUntil(
      async () => {
        if (!this.running) throw new Error('exited');
        return (await fetch(`${this.url}/healthz`)).ok;
      },
      this.options.startTimeoutMs ?? 120_000,
      100,
    );
    if (!ok || !this.running) throw new Error(`control plane did not start: ${this.errorLines.slice(-3).join(' | ')}`);
  }

  async credentials(): Promise<InitialCredentials> {
    return JSON.parse(await readFile(join(this.options.dataDir, 'initial-credentials.json'), 'utf8')) as InitialCredentials;
  }

  /** An admin session token. */
  async login(): Promise<string> {
    const c = await this.credentials();
    const res = await fetch(`${this.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: c.adminEmail, password: c.adminPassword }),
    });
    if (!res.ok) throw new Error(`login: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { token: string }).token;
  }

  /** SIGKILL: no shutdown hook runs. */
  async kill(): Promise<void> {
    if (this.running) this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM and wait (graceful), SIGKILL after 15 s. */
  async stop(): Promise<void> {
    if (this.running) this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), 15_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Reads one Prometheus sample (`name{labels} value`) from `/metrics` text; undefined when absent. */
export function metricValue(text: string, name: string, labels?: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (!(rest.startsWith('{') || rest.startsWith(' '))) continue;
    if (labels) {
      const ok = Object.entries(labels).every(([k, v]) => rest.includes(`${k}="${v}"`));
      if (!ok) continue;
    }
    const value = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}
