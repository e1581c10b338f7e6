import { LatencyRecorder, type LatencySummary } from './stats.js';

export interface GatewayLoadOptions {
  /** the gateway's OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1 */
  gatewayUrl: string;
  /** a gateway API key (or any bearer the gateway accepts) */
  apiKey: string;
  model: string;
  /** requests in flight at once (default 8) */
  concurrency?: number;
  durationMs: number;
  maxTokens?: number;
  stream?: boolean;
  /** stops early when aborted */
  signal?: AbortSignal;
}

export interface GatewayLoadResult {
  requests: number;
  ok: number;
  failed: number;
  /** failures by `<status> <error code>` or `network <code>` */
  failures: Record<string, number>;
  latency: LatencySummary;
  seconds: number;
  requestsPerSecond: number;
}

/**
 * HTTP load on the gateway: `concurrency` clients send chat completions back to back for `durationMs`. A request
 * counts as ok only with HTTP 200 and a completion (or a streamed answer ending in [DONE]).
 */
export async function saturateGateway(options: GatewayLoadOptions): Promise<GatewayLoadResult> {
  const latency = new LatencyRecorder();
  const failures: Record<string, number> = {};
  let ok = 0;
  let failed = 0;
  const started = performance.now();
  const end = Date.now() + options.durationMs;
  const body = JSON.stringify({
    model: options.model,
    messages: [{ role: 'user', content: 'Say something short.' }],
    max_tokens: options.maxTokens ?? 16,
    stream: options.stream ?? false,
  });
  const once = async (): Promise<void> => {
    const t0 = performance.now();
    let why: string | undefined;
    try {
      const res = await fetch(`${options.gatewayUrl}/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${options.apiKey}` },
        body,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      const text = await res.text();
      if (!res.ok) {
        let code = '';
        try {
          code = String((JSON.parse(text) as { error?: { code?: string } }).error?.code ?? '');
        } catch {
          code = text.slice(0, 40);
        }
        why = `${res.status} ${code}`.trim();
      } else if (options.stream ? !text.includes('[DONE]') : !text.includes('"chat.completion"')) {
        why = `${res.status} incomplete answer`;
      }
    } catch (error) {
      const cause = (error as { cause?: { code?: string } }).cause;
      why = `network ${cause?.code ?? (error instanceof Error ? error.name : String(error))}`;
    }
    if (why === undefined) {
      ok++;
      latency.record(performance.now() - t0);
    } else {
      failed++;
      failures[why] = (failures[why] ?? 0) + 1;
    }
  };
  await Promise.all(
    Array.from({ length: options.concurrency ?? 8 }, async () => {
      while (Date.now() < end && !options.signal?.aborted) await once();
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { requests: ok + failed, ok, failed, failures, latency: latency.summary(), seconds, requestsPerSecond: (ok + failed) / seconds };
}
