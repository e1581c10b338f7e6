import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultModelCacheDir, ensureModel, GENERATOR_VERSION, MODEL_CACHE_ENV, modelCacheKey } from '../src/models/index.js';
import { makeTempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('model-cache'));
});
afterAll(async () => {
  await cleanup();
});

describe('ensureModel', () => {
  it('generates on first use, then returns the cached file', async () => {
    const first = await ensureModel('tiny', { dir, seed: 5 });
    expect(first.cached).toBe(false);
    expect(first.path).toBe(join(dir, `${modelCacheKey('tiny', 'q8_0', 5)}.gguf`));
    expect(first.path).toContain(`-g${GENERATOR_VERSION}`);
    const { mtimeMs } = await stat(first.path);
    const second = await ensureModel('tiny', { dir, seed: 5 });
    expect(second).toEqual({ ...first, cached: true });
    expect((await stat(first.path)).mtimeMs).toBe(mtimeMs);
    const manifest = JSON.parse(await readFile(join(dir, `${modelCacheKey('tiny', 'q8_0', 5)}.json`), 'utf8')) as Record<string, unknown>;
    expect(manifest).toMatchObject({ sha256: first.sha256, sizeBytes: first.sizeBytes, quantization: 'Q8_0', contextLength: 4096 });
  });

  it('shares one generation between concurrent callers', async () => {
    const [a, b] = await Promise.all([ensureModel('tiny', { dir, seed: 6, format: 'f16' }), ensureModel('tiny', { dir, seed: 6, format: 'f16' })]);
    expect(a.cached).toBe(false);
    expect(b).toEqual(a);
    expect(a.quantization).toBe('F16');
  });

  it('regenerates a truncated file or a corrupted one when verifying', async () => {
    const good = await ensureModel('tiny', { dir, seed: 9 });
    await truncate(good.path, 1000);
    const again = await ensureModel('tiny', { dir, seed: 9 });
    expect(again.cached).toBe(false);
    expect(again.sha256).toBe(good.sha256);

    const bytes = await readFile(good.path);
    bytes[bytes.length - 40] = (bytes[bytes.length - 40] ?? 0) ^ 0xff;
    await writeFile(good.path, bytes);
    expect((await ensureModel('tiny', { dir, seed: 9 })).cached).toBe(true); // size still matches
    const verified = await ensureModel('tiny', { dir, seed: 9, verify: true });
    expect(verified.cached).toBe(false);
    expect(verified.sha256).toBe(good.sha256);
  });

  it('uses FLOTILLA_MODEL_CACHE, else <repo>/.cache/models', () => {
    expect(defaultModelCacheDir({ [MODEL_CACHE_ENV]: dir })).toBe(dir);
    expect(defaultModelCacheDir({}).replaceAll('\\', '/')).toMatch(/\/\.cache\/models\/?$/);
    expect(defaultModelCacheDir({})).not.toContain('/tools/');
  });

  it('rejects unknown presets and formats', async () => {
    await expect(ensureModel('huge' as never, { dir })).rejects.toThrow(/unknown model preset/);
    await expect(ensureModel('tiny', { dir, format: 'q4' as never })).rejects.toThrow(/unknown model format/);
  });
});
