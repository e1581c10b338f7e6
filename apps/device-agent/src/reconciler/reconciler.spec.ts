import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEngine, tinyModel, type TinyModel } from '../../test/support/engine.js';
import { startFileServer, type FileServer } from '../../test/support/file-server.js';
import { testLogger } from '../../test/support/silent-logger.js';
import type { LlamaEngine } from '../runtime/llama-engine.js';
import { Runtime } from '../runtime/runtime.js';
import { ModelStore } from '../store/model-store.js';
import type { RetryPolicy } from './executor.js';
import { Reconciler } from './reconciler.js';
import type { DesiredModel, ModelStatus } from './types.js';

let engine: LlamaEngine;
let tiny: TinyModel;
let server: FileServer;
const stops: (() => Promise<void>)[] = [];

beforeAll(async () => {
  [engine, tiny] = await Promise.all([createTestEngine(), tinyModel()]);
  server = await startFileServer({ '/tiny.gguf': { body: readFileSync(tiny.path) } });
});
afterAll(async () => {
  for (const stop of stops) await stop();
  await server.close();
  await engine.dispose();
});

async function setup(
  diskQuotaBytes = 1024 ** 3,
  options: { policy?: RetryPolicy; report?: (version: number, statuses: readonly ModelStatus[]) => void } = {},
) {
  const store = new ModelStore({ dir: mkdtempSync(join(tmpdir(), 'flotilla-rec-')), logger: testLogger() });
  await store.init();
  const runtime = new Runtime({
    engine,
    logger: testLogger(),
    memoryBudgetBytes: 1024 ** 3,
    maxParallelRequests: 1,
    maxQueuedRequests: 4,
    idleUnloadMs: 0,
    defaultContextSize: 512,
    defaultParallel: 1,
  });
  const reports: { version: number; statuses: readonly ModelStatus[] }[] = [];
  const events: string[] = [];
  const reconciler = new Reconciler({
    store,
    runtime,
    logger: testLogger(),
    policy: options.policy ?? { maxAttempts: 2, baseDelayMs: 20, maxDelayMs: 50 },
    diskQuotaBytes,
    memoryBudgetBytes: 1024 ** 3,
    report: (version, statuses) => {
      options.report?.(version, statuses);
      reports.push({ version, statuses });
    },
    event: (_level, code, message) => events.push(`${code}: ${message}`),
  });
  const controller = new AbortController();
  const running = reconciler.run(controller.signal);
  stops.push(async () => {
    controller.abort();
    await running;
    await runtime.dispose();
  });
  return { store, runtime, reconciler, reports, events };
}

async function until<T>(probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function tinyDesired(overrides: Partial<DesiredModel> = {}): DesiredModel {
  return { name: 'tiny', source: server.url('/tiny.gguf'), sha256: tiny.sha256, sizeBytes: tiny.sizeBytes, pinned: false, ...overrides };
}

function phaseOf(reports: { statuses: readonly ModelStatus[] }[], name: string): string | undefined {
  return reports.at(-1)?.statuses.find((status) => status.name === name)?.phase;
}

describe('Reconciler with a real store, runtime and HTTP source', () => {
  it('downloads, verifies and loads a desired model, then unloads it when it is no longer desired', async () => {
    const { runtime, reconciler, reports } = await setup();
    expect(reconciler.offer({ version: 1, models: [tinyDesired()] })).toBe(true);
    await until(() => phaseOf(reports, 'tiny') === 'ready');
    expect(runtime.loadedModels().map((model) => model.name)).toEqual(['tiny']);
    const phases = reports.map((report) => report.statuses[0]?.phase);
    expect(phases[0]).toBe('pending');
    expect(phases).toContain('verifying');
    expect(reports.at(-1)?.statuses[0]).toMatchObject({ phase: 'ready', loaded: true });

    expect(reconciler.offer({ version: 1, models: [] })).toBe(false);
    expect(reconciler.offer({ version: 2, models: [] })).toBe(true);
    await until(() => runtime.loadedModels().length === 0 && reports.at(-1)?.version === 2);
    expect(reports.at(-1)?.statuses).toEqual([]);
    expect(reconciler.offer({ version: 1, models: [tinyDesired()] })).toBe(false);
  });

  it('rejects a file with the wrong sha256 and reports the model failed with the reason', async () => {
    const { reconciler, reports, store } = await setup();
    const wrong = 'b'.repeat(64);
    reconciler.offer({ version: 1, models: [tinyDesired({ sha256: wrong })] });
    const failed = await until(() => reports.at(-1)?.statuses.find((status) => status.phase === 'failed'));
    expect(failed.code).toBe('CHECKSUM_MISMATCH');
    expect(failed.reason).toContain(`sha256 mismatch for tiny: expected ${wrong}, got ${tiny.sha256}`);
    expect(failed.reason).toContain('gave up after 2 attempts');
    expect(store.list()).toEqual([]);
  });

  it('reports a source that keeps failing as failed with the reason', async () => {
    const { reconciler, reports } = await setup();
    reconciler.offer({ version: 1, models: [tinyDesired({ source: server.url('/missing.gguf') })] });
    const failed = await until(() => reports.at(-1)?.statuses.find((status) => status.phase === 'failed'));
    expect(failed).toMatchObject({ code: 'DOWNLOAD_FAILED', reason: expect.stringMatching(/HTTP 404 Not Found .*gave up after 2 attempts/) });
  });

  it('evicts the least recently used unpinned model to stay within the disk quota', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-src-'));
    const make = (name: string): DesiredModel => {
      const body = randomBytes(1_000_000);
      writeFileSync(join(dir, name), body);
      return { name, source: pathToFileURL(join(dir, name)).href, sha256: createHash('sha256').update(body).digest('hex'), sizeBytes: body.length, pinned: name === 'pinned', load: false };
    };
    const [old, recent, pinned] = [make('old'), make('recent'), make('pinned')];
    const { reconciler, reports, store, events } = await setup(tiny.sizeBytes + 2_500_000);
    reconciler.offer({ version: 1, models: [pinned, old, recent] });
    await until(() => reports.at(-1)?.statuses.every((status) => status.phase === 'ready'));
    await store.touch(recent.sha256);
    await store.touch(pinned.sha256);
    await new Promise((resolve) => setTimeout(resolve, 5));
    await store.touch(recent.sha256);

    reconciler.offer({ version: 2, models: [tinyDesired()] });
    await until(() => phaseOf(reports, 'tiny') === 'ready');
    const left = store.list().map((file) => file.sha256);
    expect(left).toContain(pinned.sha256);
    expect(left).toContain(recent.sha256);
    expect(left).not.toContain(old.sha256);
    expect(events.some((event) => event.startsWith(`MODEL_EVICTED: evicted ${old.sha256}`))).toBe(true);
  });

  it('pins a stored file when the desired state says so; a failed write is reported, the store keeps the old flag and the pin is retried until it lands', async () => {
    const { reconciler, reports, store, events } = await setup(1024 ** 3, { policy: { maxAttempts: 2, baseDelayMs: 100, maxDelayMs: 400 } });
    reconciler.offer({ version: 1, models: [tinyDesired({ load: false })] });
    await until(() => phaseOf(reports, 'tiny') === 'ready');
    const meta = join(store.dir, `${tiny.sha256}.json`);
    expect(JSON.parse(readFileSync(meta, 'utf8'))).toMatchObject({ pinned: false });

    // The metadata file cannot be replaced (a non-empty directory in its place): every write of the pin fails.
    rmSync(meta);
    mkdirSync(join(meta, 'blocked'), { recursive: true });
    reconciler.offer({ version: 2, models: [tinyDesired({ load: false, pinned: true })] });
    const failures = (): string[] => events.filter((event) => event.startsWith('MODEL_PIN_FAILED: tiny: could not pin the file'));
    await until(() => failures().length >= 2);
    expect(store.list().find((file) => file.sha256 === tiny.sha256)?.pinned).toBe(false);
    // Retried at the loop's backoff, not in a busy loop: 100 ms doubling to 400 ms (jittered to half) over ~2 s.
    const before = failures().length;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const during = failures().length - before;
    expect(during).toBeGreaterThanOrEqual(2);
    expect(during).toBeLessThanOrEqual(12);

    rmSync(meta, { recursive: true });
    const onDisk = (): { pinned?: boolean } | undefined => {
      try {
        return JSON.parse(readFileSync(meta, 'utf8')) as { pinned?: boolean };
      } catch {
        return undefined; // not written yet
      }
    };
    await until(() => onDisk()?.pinned === true, 5000);
    expect(store.list().find((file) => file.sha256 === tiny.sha256)?.pinned).toBe(true);
  });

  it('backs off while a step keeps failing (here the model-state report), then reports once it works again', async () => {
    let calls = 0;
    let failing = true;
    const { reconciler, reports } = await setup(1024 ** 3, {
      policy: { maxAttempts: 2, baseDelayMs: 100, maxDelayMs: 400 },
      report: () => {
        calls++;
        // A loop without backoff retries in microtasks and starves the event loop: give up failing after 500 calls
        // so that such a loop ends and this test reports it instead of hanging.
        if (failing && calls < 500) throw new Error('model state could not be sent');
      },
    });
    const started = Date.now();
    reconciler.offer({ version: 1, models: [] });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const window = Date.now() - started;
    // 50-100, 100-200, then 200-400 ms apart: at most ~10 attempts in 2 s.
    expect(calls).toBeGreaterThanOrEqual(3);
    expect(calls).toBeLessThanOrEqual(Math.ceil(window / 200) + 4);
    expect(reports).toEqual([]);
    failing = false;
    await until(() => reports.at(-1)?.version === 1, 5000);
  });
});
