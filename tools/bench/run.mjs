// `npm run bench`: the gateway's added latency and throughput against calling the device agent's local
// OpenAI-compatible endpoint directly. Starts a real control plane (built, as a process) and one real agent; tools
// never import apps, so everything goes through processes, HTTP and MQTT.
//
// Fair by construction: both sides send the same body (same model, prompt, max_tokens, temperature 0, seed), non-streamed,
// with the same number of clients in parallel; warm-up requests are sent to both and thrown away; the measured requests
// run in alternating blocks (direct, gateway, gateway, direct, ...) so background load on the machine hits both sides
// alike; a request counts as a success only with HTTP 200 and a completion; latency percentiles and throughput are over
// successful requests only, and failures are reported separately.
//
// Options (env): BENCH_REQUESTS (200 measured per side), BENCH_CONCURRENCY (4), BENCH_MAX_TOKENS (16),
// BENCH_WARMUP (20 per side), BENCH_BLOCKS (4 per side), BENCH_MODEL (generated preset: tiny).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { root, workspaceEnv } from '../scripts/workspace.mjs';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 200);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const MAX_TOKENS = Number(process.env.BENCH_MAX_TOKENS ?? 16);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 20);
const BLOCKS = Math.max(1, Number(process.env.BENCH_BLOCKS ?? 4));
const PRESET = process.env.BENCH_MODEL ?? 'tiny';
const MODEL = `bench-${PRESET}`;

const env = workspaceEnv({ NODE_LLAMA_CPP_GPU: 'false' });
// Through Nx, so a fresh clone gets the Prisma client generated and the agent bundled first (cached afterwards).
console.log('building the tools, the control plane and the agent (cached by Nx)...');
execFileSync('npx', ['nx', 'run-many', '-t', 'build', '-p', '@flotilla/tools', '@flotilla/control-plane', '@flotilla/device-agent', '--outputStyle=static'], {
  cwd: root,
  stdio: ['ignore', 'ignore', 'inherit'],
  env,
});
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

/** Nearest-rank percentile of an ascending list. */
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

const BODY = { model: MODEL, messages: [{ role: 'user', content: 'Say something short.' }], max_tokens: MAX_TOKENS, temperature: 0, seed: 1 };

/** One request: success only with HTTP 200 and a chat completion carrying usage. */
async function once(side) {
  const t0 = performance.now();
  try {
    const res = await fetch(`${side.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(side.token ? { authorization: `Bearer ${side.token}` } : {}) },
      body: JSON.stringify(BODY),
    });
    const text = await res.text();
    const ms = performance.now() - t0;
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.ok && json?.object === 'chat.completion' && json.usage) return { ok: true, ms, tokens: json.usage.completion_tokens };
    return { ok: false, ms, why: `${res.status} ${json?.error?.code ?? json?.error?.message ?? text.slice(0, 80)}` };
  } catch (error) {
    return { ok: false, ms: performance.now() - t0, why: `network ${error?.cause?.code ?? error?.message ?? error}` };
  }
}

/** `n` requests from CONCURRENCY clients in parallel; returns the results and the block's wall time. */
async function block(side, n) {
  const results = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        next++;
        results.push(await once(side));
      }
    }),
  );
  return { results, seconds: (performance.now() - started) / 1000 };
}

function summarize(blocks) {
  const all = blocks.flatMap((b) => b.results);
  const ok = all.filter((r) => r.ok);
  const latencies = ok.map((r) => r.ms).sort((a, b) => a - b);
  const seconds = blocks.reduce((s, b) => s + b.seconds, 0);
  const failuresByReason = {};
  for (const r of all.filter((x) => !x.ok)) failuresByReason[r.why] = (failuresByReason[r.why] ?? 0) + 1;
  const tokens = ok.reduce((s, r) => s + r.tokens, 0);
  return {
    requests: all.length,
    successes: ok.length,
    failures: all.length - ok.length,
    failuresByReason,
    // over successful requests only
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    meanMs: latencies.length ? latencies.reduce((s, x) => s + x, 0) / latencies.length : null,
    throughputRps: ok.length / seconds,
    completionTokens: tokens,
    tokensPerSecond: tokens / seconds,
    seconds,
  };
}

try {
  await until(async () => (await fetch(`${cpUrl}/healthz`)).ok, 'the control plane');
  const creds = JSON.parse(await readFile(join(dir, 'cp', 'initial-credentials.json'), 'utf8'));
  const { token: admin } = await call(cpUrl, '/api/v1/auth/login', undefined, { email: creds.adminEmail, password: creds.adminPassword });
  const model = await ensureModel(PRESET);
  await call(cpUrl, '/api/v1/models', admin, {
    name: MODEL,
    sourceUrl: `file://${model.path}`,
    sha256: model.sha256,
    sizeBytes: model.sizeBytes,
    quantization: 'Q8_0',
    memoryBytes: model.sizeBytes * 4,
    contextLength: 2048,
    tier: 'small',
  });
  agents = await startAgents({ controlPlaneUrl: cpUrl, adminToken: admin, count: 1, baseDir: join(dir, 'agents'), env: { FLOTILLA_AGENT_MAX_PARALLEL_REQUESTS: String(CONCURRENCY) } });
  await call(cpUrl, '/api/v1/deployments', admin, { name: 'bench', model: MODEL, replicas: 1, parallel: Math.min(64, CONCURRENCY * 2), contextSize: 2048 });
  await until(async () => (await call(cpUrl, '/api/v1/gateway/stats', admin, undefined, 'GET')).replicas[MODEL]?.length === 1, 'the model to be ready', 120_000);
  const direct = { name: 'direct', url: agents[0].localApiUrl, token: undefined };
  const gateway = { name: 'gateway', url: `${cpUrl}/v1`, token: creds.apiKey };

  console.log(`warming up: ${WARMUP} requests per side, not counted...`);
  await block(direct, WARMUP);
  await block(gateway, WARMUP);

  const perBlock = Math.ceil(REQUESTS / BLOCKS);
  const measured = { direct: [], gateway: [] };
  console.log(`measuring: ${REQUESTS} requests per side in ${BLOCKS} alternating blocks, ${CONCURRENCY} clients, model ${MODEL}, max_tokens ${MAX_TOKENS}...`);
  for (let b = 0; b < BLOCKS; b++) {
    const n = Math.min(perBlock, REQUESTS - b * perBlock);
    if (n <= 0) break;
    // ABBA order: neither side always runs first.
    const order = b % 2 === 0 ? [direct, gateway] : [gateway, direct];
    for (const side of order) measured[side.name].push(await block(side, n));
  }
  const d = summarize(measured.direct);
  const g = summarize(measured.gateway);
  const ratio = (x, y) => (x === null || y === null || y === 0 ? null : x / y);
  const result = {
    at: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    loadAverageAtStart: loadavg()[0],
    model: MODEL,
    requestsPerSide: REQUESTS,
    warmupPerSide: WARMUP,
    blocksPerSide: BLOCKS,
    concurrency: CONCURRENCY,
    maxTokens: MAX_TOKENS,
    method:
      'same body, model and client concurrency on both sides, non-streamed; warm-up excluded; alternating ABBA blocks; ' +
      'success = HTTP 200 with a completion; latency percentiles (nearest rank) and throughput over successful requests only; failures reported separately',
    direct: d,
    gateway: g,
    addedLatencyP50Ms: d.p50Ms === null || g.p50Ms === null ? null : g.p50Ms - d.p50Ms,
    addedLatencyP99Ms: d.p99Ms === null || g.p99Ms === null ? null : g.p99Ms - d.p99Ms,
    ratio: { p50: ratio(g.p50Ms, d.p50Ms), p99: ratio(g.p99Ms, d.p99Ms), throughput: ratio(g.throughputRps, d.throughputRps) },
  };
  const f = (x, digits = 2) => (x === null ? 'n/a' : x.toFixed(digits));
  const line = (name, s) =>
    `${name.padEnd(8)} ${String(s.successes).padStart(5)}/${s.requests} ok  ${String(s.failures).padStart(4)} failed  p50 ${f(s.p50Ms).padStart(8)} ms  p99 ${f(s.p99Ms).padStart(8)} ms  ${f(s.throughputRps).padStart(7)} req/s  ${f(s.tokensPerSecond, 0).padStart(6)} tok/s`;
  console.log('\nlatency and throughput over successful requests only (failures counted separately):');
  console.log(line('direct', d));
  console.log(line('gateway', g));
  for (const [name, s] of [
    ['direct', d],
    ['gateway', g],
  ]) {
    for (const [why, n] of Object.entries(s.failuresByReason)) console.log(`  ${name} failure: ${n} x ${why}`);
  }
  console.log(
    `gateway/direct: p50 ${f(result.ratio.p50, 3)}x, p99 ${f(result.ratio.p99, 3)}x, throughput ${f(result.ratio.throughput, 3)}x; added latency p50 ${f(result.addedLatencyP50Ms)} ms, p99 ${f(result.addedLatencyP99Ms)} ms`,
  );
  await mkdir(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `gateway-${result.at.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  await writeFile(join(root, 'bench/results/gateway-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`written to ${file}`);
} finally {
  await cleanup();
}
