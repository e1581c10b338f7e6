import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LoginResponseSchema, type LoginRequest } from '@flotilla/protocol';
import { freePort } from './fleet.js';

/** The built control plane: `npx nx build @flotilla/control-plane`. */
export const CONTROL_PLANE_MAIN = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../apps/control-plane/dist/main.js');

export interface ControlPlaneProcessOptions {
  /** data directory (PGlite database, initial credentials); created */
  dataDir: string;
  /** default: free ports */
  httpPort?: number;
  mqttPort?: number;
  /** PostgreSQL instead of the embedded PGlite (DATABASE_URL); the database must exist */
  databaseUrl?: string;
  /** extra FLOTILLA_* variables */
  env?: Record<string, string>;
  logLevel?: string;
  /** forward the control plane's stderr (debugging); otherwise its last lines are kept for errors */
  inheritStderr?: boolean;
  main?: string;
  /** how long start() waits for /healthz (default 120 s: a loaded 2-core box can take over a minute) */
  startTimeoutMs?: number;
  /** told of each process started (e.g. to kill it when the caller is interrupted) */
  onChild?: (child: ChildProcess) => void;
}

/**
 * The BUILT control plane as a child process (tools never import apps), for scenarios and benchmarks: start, stop
 * (SIGTERM), kill (SIGKILL), restart on the same ports and data, its pid for CPU/RSS sampling, and an admin session
 * token from the initial credentials it writes on first start.
 */
export class ControlPlaneProcess {
  private child: ChildProcess | undefined;
  private exitedPromise: Promise<number | null> = Promise.resolve(null);
  private stderrTail: string[] = [];
  private admin: { email: string; password: string; apiKey?: string } | undefined;
  /** a session token of the initial admin (set by start()) */
  adminToken = '';
  /** stderr lines at error or fatal level (pino 50/60) and plain start-up failures, over every start (not inherited) */
  readonly errorLines: string[] = [];
  /** every exit of a started process */
  readonly exits: { code: number | null; signal: string | null; at: number }[] = [];

  private constructor(
    private readonly options: ControlPlaneProcessOptions,
    readonly httpPort: number,
    readonly mqttPort: number,
  ) {}

  /** Starts the control plane and waits until it answers /healthz and the admin has logged in. */
  static async start(options: ControlPlaneProcessOptions): Promise<ControlPlaneProcess> {
    const main = options.main ?? CONTROL_PLANE_MAIN;
    if (!existsSync(main)) throw new Error(`control plane not built at ${main}: run npx nx build @flotilla/control-plane`);
    const cp = new ControlPlaneProcess(options, options.httpPort ?? (await freePort()), options.mqttPort ?? (await freePort()));
    await cp.start();
    return cp;
  }

  /** http://127.0.0.1:<port> */
  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** the OpenAI-compatible gateway base URL */
  get gatewayUrl(): string {
    return `${this.url}/v1`;
  }

  get mqttUrl(): string {
    return `mqtt://127.0.0.1:${this.mqttPort}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** resolves with the exit code when the current process exits */
  get exited(): Promise<number | null> {
    return this.exitedPromise;
  }

  /** the admin's email and password from initial-credentials.json */
  get adminCredentials(): { email: string; password: string } | undefined {
    return this.admin ? { email: this.admin.email, password: this.admin.password } : undefined;
  }

  /** the API key of initial-credentials.json (the gateway accepts it), when it has one */
  get apiKey(): string | undefined {
    return this.admin?.apiKey;
  }

  /** (Re)starts the process on the same ports and data; a no-op while it runs. */
  async start(): Promise<void> {
    if (this.running) return;
    const options = this.options;
    await mkdir(options.dataDir, { recursive: true });
    const child = spawn(process.execPath, [options.main ?? CONTROL_PLANE_MAIN], {
      env: {
        ...process.env,
        FLOTILLA_DATA_DIR: options.dataDir,
        FLOTILLA_HTTP_HOST: '127.0.0.1',
        FLOTILLA_HTTP_PORT: String(this.httpPort),
        FLOTILLA_MQTT_HOST: '127.0.0.1',
        FLOTILLA_MQTT_PORT: String(this.mqttPort),
        FLOTILLA_LOG_LEVEL: options.logLevel ?? 'warn',
        ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
        ...options.env,
      },
      stdio: ['ignore', 'ignore', options.inheritStderr ? 'inherit' : 'pipe'],
    });
    this.child = child;
    options.onChild?.(child);
    this.stderrTail = [];
    let pending = '';
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      this.stderrTail.push(text);
      if (this.stderrTail.length > 50) this.stderrTail.shift();
      const lines = (pending + text).split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) {
        if (/"level":(50|60)/.test(line) || line.startsWith('flotilla:')) this.errorLines.push(line.slice(0, 2000));
      }
    });
    this.exitedPromise = new Promise((done) =>
      child.once('exit', (code, signal) => {
        this.exits.push({ code, signal, at: Date.now() });
        done(code);
      }),
    );
    const deadline = Date.now() + (options.startTimeoutMs ?? 120_000);
    for (;;) {
      if (!this.running) throw new Error(`the control plane exited during start (code ${child.exitCode ?? child.signalCode}): ${this.stderr()}`);
      const ok = await fetch(`${this.url}/healthz`).then(
        (res) => res.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`the control plane did not answer /healthz within ${options.startTimeoutMs ?? 120_000} ms: ${this.stderr()}`);
      }
      await new Promise((done) => setTimeout(done, 100));
    }
    await this.login();
  }

  /** SIGTERM and wait (SIGKILL after `graceMs`, default 15 s) */
  async stop(graceMs = 15_000): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await this.exitedPromise;
    clearTimeout(timer);
  }

  /** SIGKILL: the process dies without a word (its sockets are reset by the kernel) */
  async kill(): Promise<void> {
    if (!this.child || !this.running) return;
    this.child.kill('SIGKILL');
    await this.exitedPromise;
  }

  /** stop (or kill with `{ kill: true }`), then start again on the same ports and data */
  async restart(options: { kill?: boolean } = {}): Promise<void> {
    if (options.kill) await this.kill();
    else await this.stop();
    await this.start();
  }

  /** the last lines the process wrote to stderr (when not inherited) */
  stderr(): string {
    return this.stderrTail.join('').slice(-4000);
  }

  /** A JSON call against the REST API with the admin token; throws on a non-2xx answer. */
  async api<T = unknown>(path: string, init: { method?: string; body?: unknown; token?: string } = {}): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
      headers: { 'content-type': 'application/json', authorization: `Bearer ${init.token ?? this.adminToken}` },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path}: ${res.status} ${text.slice(0, 500)}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  private async login(): Promise<void> {
    if (!this.admin) {
      const file = JSON.parse(await readFile(`${this.options.dataDir}/initial-credentials.json`, 'utf8')) as { adminEmail?: string; adminPassword?: string; apiKey?: string };
      if (!file.adminEmail || !file.adminPassword) throw new Error('initial-credentials.json has no adminEmail/adminPassword');
      this.admin = { email: file.adminEmail, password: file.adminPassword, ...(file.apiKey ? { apiKey: file.apiKey } : {}) };
    }
    const res = await fetch(`${this.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: this.admin.email, password: this.admin.password } satisfies LoginRequest),
    });
    if (!res.ok) throw new Error(`admin login failed: ${res.status} ${await res.text()}`);
    this.adminToken = LoginResponseSchema.parse(await res.json()).token;
  }
}
