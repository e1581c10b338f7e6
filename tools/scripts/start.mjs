#!/usr/bin/env node
// `npm start`: builds what is missing, then runs the control plane on its embedded defaults (PGlite, aedes) and one
// local device agent that enrolls itself. Stops both on Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { root, workspaceEnv } from './workspace.mjs';

const env = workspaceEnv();
const dataDir = resolve(root, process.env.FLOTILLA_DATA_DIR ?? '.flotilla');
env.FLOTILLA_DATA_DIR = dataDir;
const agentDataDir = resolve(process.env.FLOTILLA_AGENT_DATA_DIR ?? join(dataDir, 'agent'));
env.FLOTILLA_AGENT_DATA_DIR = agentDataDir;
// The control plane decides its HTTP port: FLOTILLA_HTTP_PORT when set, else the one recorded in
// <dataDir>/ports.json (written once every listener is bound: the default 8080, or the next free port if it was taken).
let baseUrl;
function currentBaseUrl() {
  const fromVariable = process.env.FLOTILLA_HTTP_PORT?.trim();
  let port = fromVariable || undefined;
  if (!port) {
    try {
      port = JSON.parse(readFileSync(join(dataDir, 'ports.json'), 'utf8')).http;
    } catch {
      // not written yet: the control plane is still starting
    }
  }
  return port ? `http://127.0.0.1:${port}` : undefined;
}

function fail(message) {
  process.stderr.write(`flotilla: ${message}\n`);
  process.exit(1);
}

// 1. Build (cached by Nx: a second start skips it).
if (process.env.FLOTILLA_SKIP_BUILD !== '1') {
  process.stdout.write('Building Flotilla (cached after the first run)...\n');
  const build = spawnSync('npx', ['nx', 'run-many', '-t', 'build', '--outputStyle=static'], { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'] });
  if (build.status !== 0) {
    process.stdout.write(build.stdout?.toString() ?? '');
    fail('build failed (see above)');
  }
}

const children = new Set();
let stopping = false;
/** Stops the agent first, while its broker is still there to take its goodbye, then the control plane. */
function stopAll(code) {
  if (stopping) return;
  stopping = true;
  const agents = [...children].filter((child) => child.flotillaRole === 'agent');
  const others = () => [...children].filter((child) => child.flotillaRole !== 'agent');
  for (const child of agents) child.kill('SIGTERM');
  // Never leave a child behind: one still there after the grace period gets a second signal, which forces its exit.
  const timer = setTimeout(() => {
    for (const child of children) child.kill('SIGTERM');
    setTimeout(() => {
      for (const child of children) child.kill('SIGKILL');
      process.exit(code);
    }, 3_000).unref();
  }, 15_000);
  timer.unref();
  let controlPlaneSignalled = false;
  const wait = () => {
    if (children.size === 0) return process.exit(code);
    if (!controlPlaneSignalled && agents.every((child) => !children.has(child))) {
      controlPlaneSignalled = true;
      for (const child of others()) child.kill('SIGTERM');
    }
    setTimeout(wait, 100);
  };
  wait();
}
process.on('SIGINT', () => stopAll(0));
process.on('SIGTERM', () => stopAll(0));

function start(name, args, role, extraEnv = {}) {
  const child = spawn(process.execPath, args, { cwd: root, env: { ...env, ...extraEnv }, stdio: 'inherit' });
  child.flotillaRole = role;
  children.add(child);
  child.on('exit', (code, signal) => {
    children.delete(child);
    if (!stopping) {
      // A failing child already printed its own one-line reason; only a signal needs saying.
      if (signal) process.stderr.write(`flotilla: ${name} was stopped by ${signal}\n`);
      stopAll(code ?? 1);
    }
  });
  return child;
}

async function waitForHealth(timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !stopping) {
    const url = currentBaseUrl();
    try {
      if (url && (await fetch(`${url}/healthz`)).ok) {
        baseUrl = url;
        return true;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

/** The README's first request; "running" is said only once it has been answered. */
const FIRST_REQUEST_BODY = { model: 'auto', messages: [{ role: 'user', content: 'hello' }], max_tokens: 16 };

/** Asks the gateway until a model answers (the deployment converges in the background): the last error, or null. */
async function waitForAnswer(apiKey, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  while (Date.now() < deadline && !stopping) {
    try {
      const res = await fetch(`${baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(FIRST_REQUEST_BODY),
      });
      const text = await res.text();
      if (res.ok) return null;
      last = `${res.status} ${text.slice(0, 200)}`;
    } catch (error) {
      last = error.message;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return last;
}

function runningMessage(credentialsFile) {
  const key = `$(node -p "require('${credentialsFile}').apiKey")`;
  return [
    'Flotilla is running (Ctrl-C stops it):',
    `  dashboard (a placeholder for now) and REST API:  ${baseUrl}   (/api/v1)`,
    `  OpenAI-compatible gateway:                       ${baseUrl}/v1`,
    '  a first request, ready to paste:',
    `    KEY=${key}`,
    `    curl -s ${baseUrl}/v1/chat/completions -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d '${JSON.stringify(FIRST_REQUEST_BODY)}'`,
    '',
  ].join('\n');
}

async function api(path, { method = 'GET', token, body } = {}) {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${json?.error?.message ?? ''}`);
  return json;
}

/** Generates the `tiny` model (cached) and, when the catalog does not know it yet, deploys one replica locally. */
async function deployTinyModel(token) {
  if (!token) return;
  const existing = await fetch(`${baseUrl}/api/v1/models/flotilla-tiny`, { headers: { authorization: `Bearer ${token}` } });
  if (existing.status === 200) return;
  const generated = spawnSync(process.execPath, [join(root, 'tools/dist/models/cli.js'), 'generate', '--preset', 'tiny', '--dir', join(dataDir, 'models')], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  if (generated.status !== 0) throw new Error('could not generate the tiny model');
  const model = JSON.parse(generated.stdout.toString().trim().split('\n').at(-1));
  const { catalogEntry } = await import(join(root, 'tools/dist/models/index.js'));
  await api('/api/v1/models', { method: 'POST', token, body: catalogEntry(model, { name: 'flotilla-tiny', memoryBytes: 64 * 1024 * 1024 }) });
  await api('/api/v1/deployments', {
    method: 'POST',
    token,
    body: { name: 'tiny', model: 'flotilla-tiny', replicas: 1, labelSelector: { local: 'true' }, contextSize: 2048, parallel: 2 },
  });
  process.stdout.write('Deployed the generated model "flotilla-tiny" to the local agent.\n');
}

// 2. The control plane.
start('control plane', [join(root, 'apps/control-plane/dist/main.js')], 'control-plane');
if (!(await waitForHealth(60_000))) {
  if (!stopping) {
    process.stderr.write('flotilla: the control plane did not become healthy within 60 s\n');
    stopAll(1);
  }
} else {
  // 3. The local device agent: enroll once with a token minted through the admin API, then run; and on first
  //    setup, the generated `tiny` model in the catalog with one replica deployed to the local agent.
  const agentMain = join(root, 'apps/device-agent/dist/flotilla-agent.mjs');
  const credentialsFile = join(agentDataDir, 'credentials.json');
  const initialFile = join(dataDir, 'initial-credentials.json');
  let session;
  const adminSession = async () => {
    if (session) return session;
    if (!existsSync(initialFile)) return undefined;
    const initial = JSON.parse(readFileSync(initialFile, 'utf8'));
    session = (await api('/api/v1/auth/login', { method: 'POST', body: { email: initial.adminEmail, password: initial.adminPassword } })).token;
    return session;
  };
  try {
    if (!existsSync(credentialsFile)) {
      const token = await adminSession();
      if (!token) throw new Error(`cannot enroll the local agent: ${initialFile} is missing (enroll it by hand, see README)`);
      const enrollment = await api('/api/v1/enrollment-tokens', {
        method: 'POST',
        token,
        body: { labels: { local: 'true' }, uses: 1, ttlSeconds: 600, note: 'npm start local agent' },
      });
      const enroll = spawnSync(process.execPath, [agentMain, 'enroll', '--server', baseUrl, '--token', enrollment.token, '--name', 'local'], {
        cwd: root,
        env,
        stdio: 'inherit',
      });
      if (enroll.status !== 0) throw new Error('the local agent could not enroll');
    }
    start('device agent', [agentMain, 'run'], 'agent');
    await deployTinyModel(await adminSession());
    if (!existsSync(initialFile)) {
      // Without the first gateway key there is nothing to ask the gateway with; the system runs all the same.
      process.stdout.write(`Flotilla is running on ${baseUrl} (gateway ${baseUrl}/v1; ${initialFile} is gone, so no first request was tried)\n`);
    } else {
      const { apiKey } = JSON.parse(readFileSync(initialFile, 'utf8'));
      const failure = await waitForAnswer(apiKey, 180_000);
      if (failure !== null) {
        if (!stopping) throw new Error(`the local model did not answer through the gateway within 180 s (last: ${failure})`);
      } else {
        process.stdout.write(runningMessage(initialFile));
      }
    }
  } catch (error) {
    process.stderr.write(`flotilla: ${error.message}\n`);
    stopAll(1);
  }
}
