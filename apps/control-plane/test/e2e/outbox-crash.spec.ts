import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { catalogEntry, ensureModel } from '@flotilla/tools/models';
import { freePort, startAgents, stopAgents, type SimAgent } from '@flotilla/tools/sim';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createIsolatedDatabase, describeBackends, type IsolatedDatabase } from '../support/databases.js';
import { agentAckedSeq, compareStored } from '../support/outbox.js';
import { pollUntil } from '../support/poll.js';

// Issue 8, point 2: a control-plane SIGKILL between the broker's PUBACK and the ingest's commit loses nothing.
// The control plane and three agents are real processes (the built dist/main.js and dist/flotilla-agent.mjs). The
// test seam FLOTILLA_TEST_OUTBOX_COMMIT_HOLD_MS makes every ingest flush log its batch and wait before committing;
// the test SIGKILLs the control plane as soon as a held batch holds entries of all three agents, usage included:
// those entries were PUBACKed by the broker and are not in the database, every time.

const MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const HOLD_MS = 2000;
const MODEL = 'outbox-tiny';

type Kind = 'telemetry' | 'event' | 'usage';
interface SeamDevice {
  deviceId: string;
  seqs: number[];
  kinds: Record<Kind, number>;
}
interface LogLine {
  msg?: string;
  devices?: SeamDevice[];
}

/** One control-plane process on fixed ports, its JSON log lines kept. */
class ControlPlaneProcess {
  readonly lines: LogLine[] = [];
  private child: ChildProcess | undefined;
  private exited: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly isolated: IsolatedDatabase,
    readonly httpPort: number,
    readonly mqttPort: number,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  async start(env: Record<string, string>): Promise<void> {
    this.lines.length = 0;
    const child = spawn(process.execPath, [MAIN], {
      env: {
        ...process.env,
        FLOTILLA_DATA_DIR: this.isolated.dataDir,
        FLOTILLA_HTTP_HOST: '127.0.0.1',
        FLOTILLA_HTTP_PORT: String(this.httpPort),
        FLOTILLA_MQTT_HOST: '127.0.0.1',
        FLOTILLA_MQTT_PORT: String(this.mqttPort),
        FLOTILLA_LOG_LEVEL: 'warn',
        ...(this.isolated.databaseUrl ? { DATABASE_URL: this.isolated.databaseUrl } : {}),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.exited = new Promise((done) => child.once('exit', done));
    let rest = '';
    child.stdout?.on('data', (data: Buffer) => {
      const text = rest + data.toString('utf8');
      const parts = text.split('\n');
      rest = parts.pop() ?? '';
      for (const part of parts) {
        if (!part.startsWith('{')) continue;
        try {
          this.lines.push(JSON.parse(part) as LogLine);
        } catch {
          // not a log line
        }
      }
    });
    await pollUntil(async () => (await fetch(`${this.url}/readyz`).catch(() => undefined))?.status === 200, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: 'the control plane ready',
    });
  }

  async signal(signal: 'SIGKILL' | 'SIGTERM'): Promise<void> {
    this.child?.kill(signal);
    await this.exited;
  }
}

describeBackends('control-plane SIGKILL between PUBACK and commit, real processes', (backend) => {
  let isolated: IsolatedDatabase;
  let cp: ControlPlaneProcess;
  let agents: SimAgent[] = [];
  let base: string;

  beforeAll(async () => {
    if (!existsSync(MAIN)) throw new Error(`control plane not built at ${MAIN}: npx nx build @flotilla/control-plane`);
    isolated = await createIsolatedDatabase(backend);
    cp = new ControlPlaneProcess(isolated, await freePort(), await freePort());
    base = await mkdtemp(join(tmpdir(), 'flotilla-outbox-crash-'));
  });
  afterAll(async () => {
    await stopAgents(agents);
    await cp?.signal('SIGTERM');
    await isolated?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('stores every entry the agents produced exactly once', { timeout: 240_000 }, async () => {
    await cp.start({ FLOTILLA_TEST_OUTBOX_COMMIT_HOLD_MS: String(HOLD_MS), FLOTILLA_INGEST_FLUSH_MS: '200' });
    const creds = JSON.parse(await readFile(join(isolated.dataDir, 'initial-credentials.json'), 'utf8')) as { adminEmail: string; adminPassword: string };
    const login = await fetch(`${cp.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: creds.adminEmail, password: creds.adminPassword }),
    });
    const { token } = (await login.json()) as { token: string };
    const post = async (path: string, body: unknown) =>
      (await fetch(`${cp.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body) })).status;

    agents = await startAgents({
      controlPlaneUrl: cp.url,
      adminToken: token,
      count: 3,
      baseDir: base,
      namePrefix: 'outbox',
      env: {
        FLOTILLA_AGENT_TELEMETRY_INTERVAL_SECONDS: '0.25',
        FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: '2',
        // stay on the TCP URL while the control plane is down (the ws:// fallback is another fix of issue 8)
        FLOTILLA_AGENT_MQTT_FAILOVER_AFTER_ATTEMPTS: '100',
      },
    });
    const model = await ensureModel('tiny');
    expect(await post('/api/v1/models', catalogEntry(model, { name: MODEL, memoryBytes: 64 * 1024 * 1024 }))).toBe(201);
    expect(await post('/api/v1/deployments', { name: 'outbox', model: MODEL, replicas: 3, contextSize: 1024 })).toBe(201);

    // Usage records come from inference jobs on each agent's local endpoint, served also while the control plane is down.
    let load = true;
    let served = 0;
    const loops = agents.map(async (agent) => {
      while (load) {
        const res = await fetch(`${agent.localApiUrl}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }),
          signal: AbortSignal.timeout(10_000),
        }).catch(() => undefined);
        if (res?.status === 200) served += 1;
        await res?.text().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 150));
      }
    });
    const step = (what: string) => console.log(`[${backend}] ${new Date().toISOString()} ${what} (served ${served})`);
    step('agents started');
    /** seqs of the commit the kill interrupted, by device */
    const killed = new Map<string, number[]>();
    try {
      await pollUntil(() => served >= 6, { timeoutMs: 90_000, intervalMs: 200, what: 'local inference on the agents' });

      // The kill: inside a held commit whose batch has entries of all three agents, usage among them.
      const seenBefore = cp.lines.length;
      const held = await pollUntil(
        () =>
          cp.lines.slice(seenBefore).find((line) => {
            const devices = line.msg === 'test seam: holding the outbox commit' ? (line.devices ?? []) : [];
            return devices.length === 3 && devices.some((device) => device.kinds.usage > 0);
          }),
        { timeoutMs: 30_000, intervalMs: 20, what: 'a held commit with entries of every agent' },
      );
      await cp.signal('SIGKILL');
      step('control plane killed inside a held commit');
      for (const device of held.devices ?? []) killed.set(device.deviceId, device.seqs);

      await new Promise((r) => setTimeout(r, 1000)); // the agents keep producing while it is down
      await cp.start({});
      step('control plane restarted');
      // every agent's acknowledged seq passes the entries of the killed commit
      for (const agent of agents) {
        const last = Math.max(...(killed.get(agent.deviceId) ?? [0]));
        await pollUntil(async () => (await agentAckedSeq(agent)) >= last, { timeoutMs: 60_000, intervalMs: 200, what: `${agent.name} acked past seq ${last}` });
      }
    } finally {
      load = false;
      await Promise.all(loops);
    }
    step('agents acked past the killed commit');
    await stopAgents(agents);
    await new Promise((r) => setTimeout(r, 1000)); // the last flush
    await cp.signal('SIGTERM');

    for (const { deviceId: id, cursor, produced, got, want } of await compareStored(isolated.options, agents)) {
      const agent = agents.find((a) => a.deviceId === id) as SimAgent;
      // what is above the cursor is still on the agent: it has not been acknowledged
      expect(await agentAckedSeq(agent)).toBeLessThanOrEqual(cursor);
      console.log(
        `[${backend}] ${agent.name}: ${produced} produced, cursor ${cursor}, killed commit held ${killed.get(id)?.length ?? 0} of them; ` +
          `stored telemetry ${got.telemetry}/${want.telemetry}, events ${got.events.length}/${want.events.length}, usage ${got.usage.length}/${want.usage.length}`,
      );
      expect(got).toEqual(want);
      expect(cursor).toBeGreaterThanOrEqual(Math.max(...(killed.get(id) ?? [0])));
      expect(want.usage.length).toBeGreaterThan(0);
    }
  });
});
