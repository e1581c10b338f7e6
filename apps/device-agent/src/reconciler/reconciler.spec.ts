import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEngine, tinyModel, type TinyModel } from '../../test/support/engine.js';
import { startFileServer, type FileServer } from '../../test/support/file-server.js';
import { testLogger } from '../../test/support/silent-logger.js';
import { StuckDisposeEngine } from '../../test/support/stuck-dispose-engine.js';
import type { InferenceEngine } from '../runtime/engine.js';
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
  options: { policy?: RetryPolicy; report?: (version: number, statuses: readonly ModelStatus[]) => void; engine?: InferenceEngine } = {},
) {
  const store = new ModelStore({ dir: mkdtempSync(join(tmpdir(), 'flotilla-rec-')), logger: testLogger() });
  await store.init();
  const runtime = new Runtime({
    engine: options.engine ?? engine,
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

  it('an eviction that fails leaves the file stored and counted, is reported, and the loop evicts it once it can', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-src-'));
    const make = (name: string): DesiredModel => {
      const body = randomBytes(1_000_000);
      writeFileSync(join(dir, name), body);
      return { name, source: pathToFileURL(join(dir, name)).href, sha256: createHash('sha256').update(body).digest('hex'), sizeBytes: body.length, pinned: false, load: false };
    };
    const [old, next] = [make('old'), make('next')];
    // Room for one of the two: the second needs the first evicted.
    const { reconciler, reports, store, events } = await setup(1_500_000, { policy: { maxAttempts: 2, baseDelayMs: 100, maxDelayMs: 400 } });
    reconciler.offer({ version: 1, models: [old] });
    await until(() => phaseOf(reports, 'old') === 'ready');

    // The file cannot be unlinked (a non-empty directory in its place; a read-only directory would not stop root).
    const file = join(store.dir, `${old.sha256}.gguf`);
    rmSync(file);
    mkdirSync(join(file, 'blocked'), { recursive: true });
    reconciler.offer({ version: 2, models: [next] });
    const failures = (): string[] => events.filter((event) => event.startsWith(`MODEL_EVICT_FAILED: could not evict ${old.sha256} (1000000 bytes)`));
    await until(() => failures().length >= 1 || !store.list().some((f) => f.sha256 === old.sha256));
    // Still held, so still counted against the quota: nothing of the next model was written past it.
    expect(store.list()).toContainEqual(expect.objectContaining({ sha256: old.sha256, bytesOnDisk: 1_000_000, evictFailed: expect.stringMatching(/directory/i) }));
    expect(store.usedBytes()).toBe(1_000_000);
    expect(failures().length).toBeGreaterThanOrEqual(1);
    // Retried by the convergence loop (at its backoff), not given up.
    await until(() => failures().length >= 3, 10_000);
    expect(store.list().map((f) => f.sha256)).toEqual([old.sha256]);

    rmSync(file, { recursive: true });
    await until(() => phaseOf(reports, 'next') === 'ready');
    expect(store.list().map((f) => f.sha256)).toEqual([next.sha256]);
    expect(store.usedBytes()).toBe(1_000_000);
    expect(events.some((event) => event.startsWith(`MODEL_EVICTED: evicted ${old.sha256}`))).toBe(true);
  });

  it('a model whose unload fails stays counted as loaded, is reported, and the loop unloads it once the engine can free it', async () => {
    const stuck = new StuckDisposeEngine(engine);
    const { reconciler, reports, runtime, events } = await setup(1024 ** 3, { engine: stuck, policy: { maxAttempts: 2, baseDelayMs: 100, maxDelayMs: 400 } });
    reconciler.offer({ version: 1, models: [tinyDesired()] });
    await until(() => phaseOf(reports, 'tiny') === 'ready' && runtime.loadedModels().length === 1);
    const memoryBytes = runtime.loadedModels()[0]?.memoryBytes ?? 0;
    expect(memoryBytes).toBeGreaterThan(0);

    stuck.stuck = true;
    reconciler.offer({ version: 2, models: [] });
    const failures = (): string[] => events.filter((event) => event.startsWith('MODEL_UNLOAD_FAILED: tiny: unloading failed: ENOSPC'));
    await until(() => stuck.failedDisposals >= 1);
    // The model was not freed: it still counts against the memory budget, marked as a failed unload.
    expect(runtime.loadedModels()).toMatchObject([{ name: 'tiny', sha256: tiny.sha256, memoryBytes, unloadFailed: true }]);
    expect(runtime.isRegistered('tiny')).toBe(false);
    await until(() => failures().length >= 3 && stuck.failedDisposals >= 3, 10_000);
    expect(runtime.loadedModels()).toHaveLength(1);

    stuck.stuck = false;
    await until(() => runtime.loadedModels().length === 0);
    expect(stuck.disposed).toBe(1);
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
