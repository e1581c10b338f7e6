// The gateway's added latency and throughput against calling the device agent's local OpenAI-compatible endpoint
// directly: a real control plane (built, as a process) and one real agent with a generated model.
//
// Fair by construction: both sides send the same body (same model, prompt, max_tokens, temperature 0, seed),
// non-streamed, with the same number of clients in parallel; warm-up requests are sent to both and thrown away; the
// measured requests run in alternating blocks (direct, gateway, gateway, direct, ...) so background load hits both
// sides alike; a request counts only with HTTP 200 and a completion; latency percentiles and throughput are over
// successful requests only, and failures are reported separately.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureModel } from '../../models/index.js';
import { startAgents, stopAgents, type SimAgent } from '../../sim/fleet.js';
import { ControlPlaneProcess } from '../../sim/control-plane.js';
import { trackChild } from '../cleanup.js';
import { api } from '../http.js';
import { fmt, percentile, pollUntil, ratio } from '../stats.js';
import type { Suite, SuiteContext, SuiteOutcome } from '../suite.js';

interface Side {
  name: 'direct' | 'gateway';
  url: string;
  token: string | undefined;
}
type Outcome = { ok: true; ms: number; tokens: number } | { ok: false; ms: number; why: string };
interface Block {
  results: Outcome[];
  seconds: number;
}

export interface SideSummary {
  requests: number;
  successes: number;
  failures: number;
  failuresByReason: Record<string, number>;
  p50Ms: number | null;
  p99Ms: number | null;
  meanMs: number | null;
  throughputRps: number;
  completionTokens: number;
  tokensPerSecond: number;
  seconds: number;
}

export interface GatewayResult {
  model: string;
  method: string;
  direct: SideSummary;
  gateway: SideSummary;
  addedLatencyP50Ms: number | null;
  addedLatencyP99Ms: number | null;
  ratio: { p50: number | null; p99: number | null; throughput: number | null };
}

async function once(side: Side, body: string): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const res = await fetch(`${side.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(side.token ? { authorization: `Bearer ${side.token}` } : {}) },
      body,
    });
    const text = await res.text();
    const ms = performance.now() - t0;
    let json: { object?: string; usage?: { completion_tokens: number }; error?: { code?: string; message?: string } } | undefined;
    try {
      json = JSON.parse(text) as typeof json;
    } catch {
      json = undefined;
    }
    if (res.ok && json?.object === 'chat.completion' && json.usage) return { ok: true, ms, tokens: json.usage.completion_tokens };
    return { ok: false, ms, why: `${res.status} ${json?.error?.code ?? json?.error?.message ?? text.slice(0, 80)}` };
  } catch (error) {
    const e = error as { cause?: { code?: string }; message?: string };
    return { ok: false, ms: performance.now() - t0, why: `network ${e.cause?.code ?? e.message ?? String(error)}` };
  }
}

async function block(side: Side, body: string, n: number, concurrency: number): Promise<Block> {
  const results: Outcome[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        results.push(await once(side, body));
      }
    }),
  );
  return { results, seconds: (performance.now() - started) / 1000 };
}

function summarize(blocks: readonly Block[]): SideSummary {
  const all = blocks.flatMap((b) => b.results);
  const ok = all.filter((r): r is Extract<Outcome, { ok: true }> => r.ok);
  const latencies = ok.map((r) => r.ms).sort((a, b) => a - b);
  const seconds = blocks.reduce((s, b) => s + b.seconds, 0);
  const failuresByReason: Record<string, number> = {};
  for (const r of all) if (!r.ok) failuresByReason[r.why] = (failuresByReason[r.why] ?? 0) + 1;
  const tokens = ok.reduce((s, r) => s + r.tokens, 0);
  return {
    requests: all.length,
    successes: ok.length,
    failures: all.length - ok.length,
    failuresByReason,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    meanMs: latencies.length ? latencies.reduce((s, x) => s + x, 0) / latencies.length : null,
    throughputRps: seconds > 0 ? ok.length / seconds : 0,
    completionTokens: tokens,
    tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
    seconds,
  };
}

async function run(ctx: SuiteContext): Promise<SuiteOutcome> {
  const f = ctx.flags;
  const requests = f.number('requests', Number(process.env.BENCH_REQUESTS ?? (ctx.quick ? 20 : 200)));
  const concurrency = f.number('concurrency', Number(process.env.BENCH_CONCURRENCY ?? 4));
  const maxTokens = f.number('max-tokens', Number(process.env.BENCH_MAX_TOKENS ?? (ctx.quick ? 4 : 16)));
  const warmup = f.number('warmup', Number(process.env.BENCH_WARMUP ?? (ctx.quick ? 2 : 20)));
  const blocks = Math.max(1, f.number('blocks', Number(process.env.BENCH_BLOCKS ?? (ctx.quick ? 2 : 4))));
  const preset = f.string('model', process.env.BENCH_MODEL ?? 'tiny') as 'tiny' | 'bench';
  const modelName = `bench-${preset}`;
  const options = { requests, concurrency, maxTokens, warmup, blocks, model: modelName, database: 'pglite' };

  const dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-gateway-'));
  let cp: ControlPlaneProcess | undefined;
  let agents: SimAgent[] = [];
  try {
    const started = await ControlPlaneProcess.start({ dataDir: join(dir, 'cp'), env: { NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' }, onChild: trackChild });
    cp = started;
    const admin = started.adminToken;
    const apiKey = cp.apiKey;
    if (!apiKey) throw new Error('initial-credentials.json has no API key');
    const model = await ensureModel(preset);
    await api(cp.url, 'POST', '/api/v1/models', admin, {
      name: modelName,
      sourceUrl: `file://${model.path}`,
      sha256: model.sha256,
      sizeBytes: model.sizeBytes,
      quantization: 'Q8_0',
      memoryBytes: model.sizeBytes * 4,
      contextLength: 2048,
      tier: 'small',
    });
    agents = await startAgents({
      controlPlaneUrl: cp.url,
      adminToken: admin,
      count: 1,
      baseDir: join(dir, 'agents'),
      env: { FLOTILLA_AGENT_MAX_PARALLEL_REQUESTS: String(concurrency) },
    });
    await api(cp.url, 'POST', '/api/v1/deployments', admin, { name: 'bench', model: modelName, replicas: 1, parallel: Math.min(64, concurrency * 2), contextSize: 2048 });
    const ready = await pollUntil(async () => {
      const stats = (await api(started.url, 'GET', '/api/v1/gateway/stats', admin)) as { replicas: Record<string, unknown[]> };
      return stats.replicas[modelName]?.length === 1;
    }, 120_000);
    if (!ready) throw new Error('the model did not become ready within 120 s');
    const agent = agents[0];
    if (!agent) throw new Error('no agent');
    const direct: Side = { name: 'direct', url: agent.localApiUrl, token: undefined };
    const gateway: Side = { name: 'gateway', url: `${cp.url}/v1`, token: apiKey };
    const body = JSON.stringify({ model: modelName, messages: [{ role: 'user', content: 'Say something short.' }], max_tokens: maxTokens, temperature: 0, seed: 1 });

    ctx.log(`warming up: ${warmup} requests per side, not counted`);
    await block(direct, body, warmup, concurrency);
    await block(gateway, body, warmup, concurrency);
    const perBlock = Math.ceil(requests / blocks);
    const measured: Record<Side['name'], Block[]> = { direct: [], gateway: [] };
    ctx.log(`measuring: ${requests} requests per side in ${blocks} alternating blocks, ${concurrency} clients, ${modelName}, max_tokens ${maxTokens}`);
    for (let b = 0; b < blocks; b++) {
      const n = Math.min(perBlock, requests - b * perBlock);
      if (n <= 0) break;
      // ABBA order: neither side always runs first.
      for (const side of b % 2 === 0 ? [direct, gateway] : [gateway, direct]) measured[side.name].push(await block(side, body, n, concurrency));
    }
    const d = summarize(measured.direct);
    const g = summarize(measured.gateway);
    const result: GatewayResult = {
      model: modelName,
      method:
        'same body, model and client concurrency on both sides, non-streamed; warm-up excluded; alternating ABBA blocks; ' +
        'success = HTTP 200 with a completion; latency percentiles (nearest rank) and throughput over successful requests only; failures reported separately',
      direct: d,
      gateway: g,
      addedLatencyP50Ms: d.p50Ms === null || g.p50Ms === null ? null : g.p50Ms - d.p50Ms,
      addedLatencyP99Ms: d.p99Ms === null || g.p99Ms === null ? null : g.p99Ms - d.p99Ms,
      ratio: { p50: ratio(g.p50Ms, d.p50Ms), p99: ratio(g.p99Ms, d.p99Ms), throughput: ratio(g.throughputRps, d.throughputRps) },
    };
    const line = (name: string, s: SideSummary): string =>
      `${name.padEnd(8)} ${String(s.successes).padStart(5)}/${s.requests} ok  ${String(s.failures).padStart(4)} failed  p50 ${fmt(s.p50Ms, 2).padStart(8)} ms  p99 ${fmt(s.p99Ms, 2).padStart(8)} ms  ${fmt(s.throughputRps, 2).padStart(7)} req/s  ${fmt(s.tokensPerSecond, 0).padStart(6)} tok/s`;
    const summary = [line('direct', d), line('gateway', g)];
    for (const [name, s] of [
      ['direct', d],
      ['gateway', g],
    ] as const) {
      for (const [why, n] of Object.entries(s.failuresByReason)) summary.push(`  ${name} failure: ${n} x ${why}`);
    }
    summary.push(
      `gateway/direct: p50 ${fmt(result.ratio.p50, 3)}x, p99 ${fmt(result.ratio.p99, 3)}x, throughput ${fmt(result.ratio.throughput, 3)}x; added latency p50 ${fmt(result.addedLatencyP50Ms, 2)} ms, p99 ${fmt(result.addedLatencyP99Ms, 2)} ms`,
    );
    return { options, result, summary };
  } finally {
    await stopAgents(agents).catch(() => undefined);
    await cp?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export const gatewaySuite: Suite = {
  name: 'gateway',
  description: "gateway hop vs the agent's direct endpoint (real agent, generated model)",
  flagsHelp: ['--requests N (200)', '--concurrency N (4)', '--max-tokens N (16)', '--warmup N (20)', '--blocks N (4)', '--model tiny|bench'],
  run,
};
