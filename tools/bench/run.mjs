/* global console, process, fetch, performance, setTimeout */
// `npm run bench`: the gateway's added latency and throughput against calling the device agent's local
// OpenAI-compatible endpoint directly, same model, same concurrency. Starts a real control plane (built, as a process)
// and one real agent; tools never import apps, so everything goes through processes, HTTP and MQTT.
// Options (env): BENCH_REQUESTS (200), BENCH_CONCURRENCY (4), BENCH_MAX_TOKENS (16).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 200);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const MAX_TOKENS = Number(process.env.BENCH_MAX_TOKENS ?? 16);

const env = { ...process.env, NX_NO_CLOUD: 'true', NODE_LLAMA_CPP_GPU: 'false', NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' };
const tsc = (project) => execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', project], { cwd: root, stdio: 'inherit', env });
console.log('building tools and the control plane...');
tsc('tools/tsconfig.lib.json');
tsc('apps/control-plane/tsconfig.app.json');
const { ensureModel } = await import(join(root, 'tools/dist/models/index.js'));
const { startAgents, stopAgents, freePort } = await import(join(root, 'tools/dist/sim/index.js'));

const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-'));
const httpPort = await freePort();
const cpUrl = `http://127.0.0.1:${httpPort}`;
const cp = spawn(process.execPath, [join(root, 'apps/control-plane/dist/main.js')], {
  env: {
    ...env,
    FLOTILLA_DATA_DIR: join(dir, 'cp'),
    FLOTILLA_HTTP_HOST: '127.0.0.1',
    FLOTILLA_HTTP_PORT: String(httpPort),
    FLOTILLA_MQTT_HOST: '127.0.0.1',
    FLOTILLA_MQTT_PORT: String(await freePort()),
    FLOTILLA_LOG_LEVEL: 'warn',
  },
  stdio: ['ignore', 'ignore', 'inherit'],
});
let agents = [];
const cleanup = async () => {
  await stopAgents(agents).catch(() => undefined);
  cp.kill('SIGTERM');
  await new Promise((r) => (cp.exitCode === null ? cp.once('exit', r) : r()));
  await rm(dir, { recursive: true, force: true });
};

async function until(probe, what, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const v = await probe();
      if (v) return v;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function call(url, path, token, body, method = 'POST') {
  const res = await fetch(url + path, {
    method,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function load(url, token, n) {
  const body = { model: 'bench-tiny', messages: [{ role: 'user', content: 'Say something short.' }], max_tokens: MAX_TOKENS, temperature: 0, seed: 1 };
  const latencies = [];
  let next = 0;
  let failures = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        next++;
        const t0 = performance.now();
        const res = await fetch(`${url}/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify(body),
        });
        await res.text();
        if (!res.ok) failures++;
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return { requests: n, failures, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), throughputRps: n / seconds };
}

try {
  await until(async () => (await fetch(`${cpUrl}/healthz`)).ok, 'the control plane');
  const creds = JSON.parse(await readFile(join(dir, 'cp', 'initial-credentials.json'), 'utf8'));
  const { token: admin } = await call(cpUrl, '/api/v1/auth/login', undefined, { email: creds.adminEmail, password: creds.adminPassword });
  const model = await ensureModel('tiny');
  await call(cpUrl, '/api/v1/models', admin, {
    name: 'bench-tiny',
    sourceUrl: `file://${model.path}`,
    sha256: model.sha256,
    sizeBytes: model.sizeBytes,
    quantization: 'Q8_0',
    memoryBytes: model.sizeBytes * 4,
    contextLength: 2048,
    tier: 'small',
  });
  agents = await startAgents({ controlPlaneUrl: cpUrl, adminToken: admin, count: 1, baseDir: join(dir, 'agents'), env: { FLOTILLA_AGENT_MAX_PARALLEL_REQUESTS: String(CONCURRENCY) } });
  await call(cpUrl, '/api/v1/deployments', admin, { name: 'bench', model: 'bench-tiny', replicas: 1, parallel: Math.min(64, CONCURRENCY * 2), contextSize: 2048 });
  await until(async () => (await call(cpUrl, '/api/v1/gateway/stats', admin, undefined, 'GET')).replicas['bench-tiny']?.length === 1, 'the model to be ready', 120_000);
  const agent = agents[0];
  const gatewayUrl = `${cpUrl}/v1`;
  console.log(`warming up (${CONCURRENCY} concurrent, ${MAX_TOKENS} tokens per answer)...`);
  await load(agent.localApiUrl, undefined, 20);
  await load(gatewayUrl, creds.apiKey, 20);
  const direct = await load(agent.localApiUrl, undefined, REQUESTS);
  const gateway = await load(gatewayUrl, creds.apiKey, REQUESTS);
  const result = {
    at: new Date().toISOString(),
    node: process.version,
    requests: REQUESTS,
    concurrency: CONCURRENCY,
    maxTokens: MAX_TOKENS,
    direct,
    gateway,
    addedLatencyP50Ms: gateway.p50Ms - direct.p50Ms,
    addedLatencyP99Ms: gateway.p99Ms - direct.p99Ms,
    latencyRatioP50: gateway.p50Ms / direct.p50Ms,
    latencyRatioP99: gateway.p99Ms / direct.p99Ms,
    throughputRatio: gateway.throughputRps / direct.throughputRps,
  };
  const f = (x) => x.toFixed(2);
  console.log(`direct : p50 ${f(direct.p50Ms)} ms  p99 ${f(direct.p99Ms)} ms  ${f(direct.throughputRps)} req/s  (${direct.failures} failed)`);
  console.log(`gateway: p50 ${f(gateway.p50Ms)} ms  p99 ${f(gateway.p99Ms)} ms  ${f(gateway.throughputRps)} req/s  (${gateway.failures} failed)`);
  console.log(`added latency: p50 +${f(result.addedLatencyP50Ms)} ms, p99 +${f(result.addedLatencyP99Ms)} ms; latency ratio p50 ${f(result.latencyRatioP50)}x, p99 ${f(result.latencyRatioP99)}x; throughput ratio ${f(result.throughputRatio)}x`);
  await mkdir(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `gateway-${result.at.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(join(root, 'bench/results/gateway-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`written to ${file}`);
} finally {
  await cleanup();
}
