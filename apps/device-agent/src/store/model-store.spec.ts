import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredModel } from '../reconciler/types.js';
import { startFileServer, type FileServer } from '../../test/support/file-server.js';
import { testLogger } from '../../test/support/silent-logger.js';
import { ModelStore, ModelStoreError, type DownloadProgress } from './model-store.js';

const body = randomBytes(300_000);
const sha = createHash('sha256').update(body).digest('hex');
let server: FileServer;

beforeAll(async () => {
  server = await startFileServer({ '/m.gguf': { body }, '/broken.gguf': { body, status: 503 } });
});
afterAll(() => server.close());

function newStore(dir = mkdtempSync(join(tmpdir(), 'flotilla-store-'))): ModelStore {
  return new ModelStore({ dir, logger: testLogger() });
}

function desired(overrides: Partial<DesiredModel> = {}): DesiredModel {
  return { name: 'm', source: server.url('/m.gguf'), sha256: sha, sizeBytes: body.length, pinned: false, ...overrides };
}

describe('ModelStore', () => {
  it('downloads over HTTP with progress, verifies and renames into place', async () => {
    const store = newStore();
    await store.init();
    const progress: DownloadProgress[] = [];
    await store.download(desired(), { onProgress: (p) => progress.push(p) });
    expect(store.list()).toMatchObject([{ sha256: sha, state: 'complete', bytesOnDisk: body.length }]);
    expect(store.pathOf(sha)).toBeUndefined();
    await store.verify(desired());
    const path = store.pathOf(sha);
    expect(path).toBeDefined();
    expect(readFileSync(path as string).equals(body)).toBe(true);
    expect(progress.at(-1)).toEqual({ sha256: sha, bytes: body.length, totalBytes: body.length });
    expect(readdirSync(store.dir).sort()).toEqual([`${sha}.gguf`, `${sha}.json`]);
  });

  it('resumes a download cut mid-way with an HTTP Range request', async () => {
    const store = newStore();
    await store.init();
    server.cutNext('/m.gguf', 100_000);
    const before = server.requests.length;
    const error = await store.download(desired()).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ModelStoreError);
    expect((error as Error).message).toMatch(/interrupted after 100000 of 300000 bytes/);
    expect(store.list()[0]).toMatchObject({ state: 'partial', bytesOnDisk: 100_000 });

    // A restarted agent finds the partial file and continues from it.
    const again = newStore(store.dir);
    await again.init();
    expect(again.list()[0]).toMatchObject({ state: 'partial', bytesOnDisk: 100_000 });
    await again.download(desired());
    await again.verify(desired());
    expect(server.requests.slice(before).map((request) => request.range)).toEqual([undefined, 'bytes=100000-']);
    expect(readFileSync(again.pathOf(sha) as string).equals(body)).toBe(true);
  });

  it('copies file:// sources', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-src-'));
    writeFileSync(join(dir, 'src.gguf'), body);
    const store = newStore();
    await store.init();
    const model = desired({ source: pathToFileURL(join(dir, 'src.gguf')).href, sizeBytes: undefined });
    await store.download(model);
    await store.verify(model);
    expect(statSync(store.pathOf(sha) as string).size).toBe(body.length);
  });

  it('rejects a wrong sha256 with a clear reason and deletes the file', async () => {
    const store = newStore();
    await store.init();
    const wrong = desired({ sha256: 'a'.repeat(64) });
    await store.download(wrong);
    await expect(store.verify(wrong)).rejects.toThrow(`sha256 mismatch for m: expected ${'a'.repeat(64)}, got ${sha}`);
    expect(store.list()).toEqual([]);
    expect(readdirSync(store.dir)).toEqual([]);
  });

  it('reports HTTP errors, bad schemes and missing files with the reason', async () => {
    const store = newStore();
    await store.init();
    await expect(store.download(desired({ source: server.url('/broken.gguf') }))).rejects.toThrow(/HTTP 503 Service Unavailable from http:\/\/127\.0\.0\.1:\d+\/broken\.gguf/);
    await expect(store.download(desired({ source: server.url('/missing.gguf') }))).rejects.toThrow(/HTTP 404/);
    await expect(store.download(desired({ source: 'ftp://x/y' }))).rejects.toThrow(/unsupported source scheme ftp:/);
    await expect(store.download(desired({ source: 'file:///nope/m.gguf' }))).rejects.toThrow(/source file not found/);
    await expect(store.download(desired({ sizeBytes: 5 }))).rejects.toThrow(/has 300000 bytes, the catalog says 5/);
  });

  it('detects a truncated verified file at start and deletes it so it is fetched again', async () => {
    const store = newStore();
    await store.init();
    await store.download(desired());
    await store.verify(desired());
    writeFileSync(store.pathOf(sha) as string, body.subarray(0, 1000));
    const restarted = newStore(store.dir);
    await restarted.init();
    expect(restarted.list()).toEqual([]);
    await restarted.download(desired());
    await restarted.verify(desired());
    expect(restarted.list()[0]?.state).toBe('verified');
  });

  it('rechecks a corrupted verified file and evicts it', async () => {
    const store = newStore();
    await store.init();
    await store.download(desired());
    await store.verify(desired());
    expect(await store.recheck(sha)).toBe(true);
    const corrupt = Buffer.from(body);
    corrupt[10] = (corrupt[10] ?? 0) ^ 0xff;
    writeFileSync(store.pathOf(sha) as string, corrupt);
    expect(await store.recheck(sha)).toBe(false);
    expect(store.list()).toEqual([]);
  });

  it('keeps last use and pin across restarts', async () => {
    let clock = 1000;
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-store-'));
    const store = new ModelStore({ dir, logger: testLogger(), now: () => clock });
    await store.init();
    await store.download(desired({ pinned: true }));
    await store.verify(desired());
    clock = 5000;
    await store.touch(sha);
    const restarted = newStore(dir);
    await restarted.init();
    expect(restarted.list()).toEqual([{ sha256: sha, state: 'verified', bytesOnDisk: body.length, lastUsedAt: 5000, pinned: true }]);
  });
});
