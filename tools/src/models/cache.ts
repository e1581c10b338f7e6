// On-demand generation into a cache directory shared by tests, the simulator and benchmarks.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODEL_SEED, GENERATOR_VERSION, GeneratedModelInfo, generateModel } from './generate.js';
import { isModelFormat, isModelPreset, ModelFormat, ModelPreset, PRESETS } from './presets.js';

export const MODEL_CACHE_ENV = 'FLOTILLA_MODEL_CACHE';

export interface EnsureModelOptions {
  format?: ModelFormat;
  /** Cache directory; default `$FLOTILLA_MODEL_CACHE` or `<repo>/.cache/models`. */
  dir?: string;
  seed?: number;
  /** Re-hash a cached file instead of trusting its manifest and size. */
  verify?: boolean;
}

export interface EnsuredModel extends GeneratedModelInfo {
  /** True when the file was already in the cache. */
  cached: boolean;
}

/** `<repo>/.cache/models`, found from this module's location (src/models or dist/models under tools/). */
export function defaultModelCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[MODEL_CACHE_ENV];
  if (fromEnv && fromEnv.trim() !== '') return resolve(fromEnv);
  return fileURLToPath(new URL('../../../.cache/models/', import.meta.url));
}

/** Cache key: preset, format, seed and generator version. */
export function modelCacheKey(preset: ModelPreset, format: ModelFormat, seed: number): string {
  return `flotilla-${preset}-${format}-s${seed}-g${GENERATOR_VERSION}`;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function isManifest(value: unknown, preset: ModelPreset, format: ModelFormat, seed: number): value is Omit<GeneratedModelInfo, 'path'> {
  if (typeof value !== 'object' || value === null) return false;
  const m = value as Record<string, unknown>;
  return (
    m['generatorVersion'] === GENERATOR_VERSION &&
    m['preset'] === preset &&
    m['format'] === format &&
    m['seed'] === seed &&
    typeof m['sha256'] === 'string' &&
    typeof m['sizeBytes'] === 'number' &&
    typeof m['parameters'] === 'number'
  );
}

async function readCached(
  path: string,
  manifestPath: string,
  preset: ModelPreset,
  format: ModelFormat,
  seed: number,
  verify: boolean,
): Promise<GeneratedModelInfo | undefined> {
  let manifest: unknown;
  try {
    manifest = JSON.parse(await readFile(manifestPath, 'utf8'));
  } catch {
    return undefined;
  }
  if (!isManifest(manifest, preset, format, seed)) return undefined;
  const size = await stat(path).then(
    (s) => s.size,
    () => -1,
  );
  if (size !== manifest.sizeBytes) return undefined;
  if (verify && (await sha256File(path)) !== manifest.sha256) return undefined;
  return { ...manifest, path };
}

const inFlight = new Map<string, Promise<EnsuredModel>>();

/**
 * Returns the cached model for (preset, format, seed), generating it first when it is missing or
 * invalid. Concurrent callers in one process share the work; across processes the atomic rename
 * makes a race harmless (both write identical bytes).
 */
export async function ensureModel(preset: ModelPreset, options: EnsureModelOptions = {}): Promise<EnsuredModel> {
  if (!isModelPreset(preset)) throw new RangeError(`unknown model preset "${String(preset)}"`);
  const format = options.format ?? PRESETS[preset].defaultFormat;
  if (!isModelFormat(format)) throw new RangeError(`unknown model format "${String(format)}"`);
  const seed = options.seed ?? DEFAULT_MODEL_SEED;
  const dir = resolve(options.dir ?? defaultModelCacheDir());
  const key = modelCacheKey(preset, format, seed);
  const path = join(dir, `${key}.gguf`);
  const manifestPath = join(dir, `${key}.json`);

  const pending = inFlight.get(path);
  if (pending) return pending;
  const work = (async (): Promise<EnsuredModel> => {
    const hit = await readCached(path, manifestPath, preset, format, seed, options.verify ?? false);
    if (hit) return { ...hit, cached: true };
    const info = await generateModel({ out: path, preset, format, seed });
    const { path: _path, ...manifest } = info;
    await mkdir(dirname(manifestPath), { recursive: true });
    const temp = `${manifestPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      await writeFile(temp, `${JSON.stringify(manifest, null, 2)}\n`);
      await rename(temp, manifestPath);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    return { ...info, cached: false };
  })();
  inFlight.set(path, work);
  try {
    return await work;
  } finally {
    inFlight.delete(path);
  }
}
