import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../logger.js';
import type { DesiredModel, StoredFile } from '../reconciler/types.js';

export type DownloadProgress = { sha256: string; bytes: number; totalBytes: number | undefined };

export type DownloadOptions = {
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
};

/** Why a model file could not be fetched or used; `reason` is what the control plane is told. */
export class ModelStoreError extends Error {
  constructor(
    readonly code: 'SOURCE_FAILED' | 'CHECKSUM_MISMATCH' | 'SIZE_MISMATCH' | 'BAD_SOURCE',
    message: string,
  ) {
    super(message);
    this.name = 'ModelStoreError';
  }
}

type FileMeta = { sha256: string; name: string; sizeBytes?: number; lastUsedAt: number; pinned: boolean };

type Entry = FileMeta & {
  state: StoredFile['state'];
  bytesOnDisk: number;
  /** Why the last eviction failed: the file is still held and still counted until an eviction succeeds. */
  evictFailed?: string;
};

const SHA256_PATTERN = /^[0-9a-f]{64}$/;
const PROGRESS_INTERVAL_MS = 250;

export type ModelStoreOptions = {
  dir: string;
  logger: Logger;
  /** Abort a download when no byte arrives for this long. */
  stallTimeoutMs?: number;
  now?: () => number;
};

/**
 * Content-addressed model files: `<sha256>.part` while downloading, `<sha256>.gguf` once verified,
 * `<sha256>.json` with the name, expected size, last use and pin. A verified file is only ever
 * produced by renaming a `.part` whose hash matched, so a `.gguf` is never half-written.
 */
export class ModelStore {
  private readonly entries = new Map<string, Entry>();
  private metaWrites = 0;
  private readonly now: () => number;
  private readonly stallTimeoutMs: number;

  constructor(private readonly options: ModelStoreOptions) {
    this.now = options.now ?? Date.now;
    this.stallTimeoutMs = options.stallTimeoutMs ?? 30_000;
  }

  get dir(): string {
    return this.options.dir;
  }

  /** Scans the directory; a verified file whose size differs from its recorded size is deleted (fetched again later). */
  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const names = await readdir(this.dir);
    const shas = new Set(names.map((name) => name.split('.')[0] ?? '').filter((sha) => SHA256_PATTERN.test(sha)));
    for (const sha256 of shas) {
      const meta = await this.readMeta(sha256);
      const full = await sizeOf(this.verifiedPath(sha256));
      const part = await sizeOf(this.partPath(sha256));
      if (full !== undefined) {
        if (meta?.sizeBytes !== undefined && meta.sizeBytes !== full) {
          this.options.logger.warn({ sha256, expected: meta.sizeBytes, actual: full }, 'model file has the wrong size, deleting it');
          await rm(this.verifiedPath(sha256), { force: true });
        } else {
          this.entries.set(sha256, { ...(meta ?? defaultMeta(sha256, this.now())), sizeBytes: full, state: 'verified', bytesOnDisk: full });
          continue;
        }
      }
      if (part !== undefined) {
        const base = meta ?? defaultMeta(sha256, this.now());
        const complete = base.sizeBytes !== undefined && part === base.sizeBytes;
        this.entries.set(sha256, { ...base, state: complete ? 'complete' : 'partial', bytesOnDisk: part });
      } else if (meta) {
        await rm(this.metaPath(sha256), { force: true });
      }
    }
  }

  list(): StoredFile[] {
    return [...this.entries.values()].map(({ sha256, state, bytesOnDisk, lastUsedAt, pinned, evictFailed }) => ({
      sha256,
      state,
      bytesOnDisk,
      lastUsedAt,
      pinned,
      ...(evictFailed === undefined ? {} : { evictFailed }),
    }));
  }

  /** Verified files with the model name they were downloaded as. */
  verifiedFiles(): { name: string; sha256: string; sizeBytes: number; fileName: string }[] {
    return [...this.entries.values()]
      .filter((entry) => entry.state === 'verified')
      .map((entry) => ({ name: entry.name, sha256: entry.sha256, sizeBytes: entry.bytesOnDisk, fileName: `${entry.sha256}.gguf` }));
  }

  usedBytes(): number {
    let sum = 0;
    for (const entry of this.entries.values()) sum += entry.bytesOnDisk;
    return sum;
  }

  /** Path of a verified file, or undefined. */
  pathOf(sha256: string): string | undefined {
    return this.entries.get(sha256)?.state === 'verified' ? this.verifiedPath(sha256) : undefined;
  }

  /** Records a use for least-recently-used eviction. */
  async touch(sha256: string): Promise<void> {
    const entry = this.entries.get(sha256);
    if (!entry) return;
    entry.lastUsedAt = this.now();
    // In use again: an eviction that failed earlier is no longer wanted.
    delete entry.evictFailed;
    await this.writeMeta(entry);
  }

  /** Pinned files are never chosen for eviction; the pin follows the desired state. */
  async setPinned(sha256: string, pinned: boolean): Promise<void> {
    const entry = this.entries.get(sha256);
    if (!entry || entry.pinned === pinned) return;
    entry.pinned = pinned;
    try {
      await this.writeMeta(entry);
    } catch (error) {
      // Not on disk, not pinned: the caller sees the old flag and tries again.
      entry.pinned = !pinned;
      throw error;
    }
  }

  /**
   * Fetches the rest of the file into `<sha>.part`, resuming from the bytes already there.
   * Resolves when the source has no more bytes; the file still has to be verified.
   */
  async download(model: DesiredModel, options: DownloadOptions = {}): Promise<void> {
    const sha256 = model.sha256;
    let entry = this.entries.get(sha256);
    if (entry?.state === 'verified') return;
    if (!entry) {
      entry = { ...defaultMeta(sha256, this.now()), name: model.name, pinned: model.pinned, state: 'partial', bytesOnDisk: 0 };
      if (model.sizeBytes !== undefined) entry.sizeBytes = model.sizeBytes;
      this.entries.set(sha256, entry);
    }
    // The catalog is authoritative about the size; an earlier guess from a server header is not.
    if (model.sizeBytes !== undefined) entry.sizeBytes = model.sizeBytes;
    entry.bytesOnDisk = (await sizeOf(this.partPath(sha256))) ?? 0;
    if (entry.sizeBytes !== undefined && entry.bytesOnDisk > entry.sizeBytes) {
      await truncate(this.partPath(sha256), 0);
      entry.bytesOnDisk = 0;
    }
    await this.writeMeta(entry);

    let url: URL;
    try {
      url = new URL(model.source);
    } catch {
      throw new ModelStoreError('BAD_SOURCE', `not a URL: ${model.source}`);
    }
    if (url.protocol === 'file:') await this.copyFromFile(url, entry, options);
    else if (url.protocol === 'http:' || url.protocol === 'https:') await this.fetchHttp(url, entry, options);
    else throw new ModelStoreError('BAD_SOURCE', `unsupported source scheme ${url.protocol} (use http, https or file)`);

    if (entry.sizeBytes !== undefined && entry.bytesOnDisk !== entry.sizeBytes) {
      throw new ModelStoreError('SIZE_MISMATCH', `source ended after ${entry.bytesOnDisk} of ${entry.sizeBytes} bytes`);
    }
    entry.sizeBytes = entry.bytesOnDisk;
    entry.state = 'complete';
    await this.writeMeta(entry);
  }

  /** Hashes the downloaded file; on a match renames it into place, otherwise deletes it and throws. */
  async verify(model: DesiredModel): Promise<void> {
    const entry = this.entries.get(model.sha256);
    if (entry?.state === 'verified') return;
    if (!entry || entry.state !== 'complete') throw new ModelStoreError('SIZE_MISMATCH', `nothing complete to verify for ${model.name}`);
    const actual = await hashFile(this.partPath(model.sha256));
    if (actual !== model.sha256) {
      await this.evict(model.sha256);
      throw new ModelStoreError('CHECKSUM_MISMATCH', `sha256 mismatch for ${model.name}: expected ${model.sha256}, got ${actual}`);
    }
    // fsync before the rename so a crash cannot leave a verified name on unwritten data.
    const handle = await open(this.partPath(model.sha256), 'r+');
    await handle.sync();
    await handle.close();
    await rename(this.partPath(model.sha256), this.verifiedPath(model.sha256));
    entry.state = 'verified';
    entry.lastUsedAt = this.now();
    await this.writeMeta(entry);
  }

  /** Hashes a verified file again (after a load failure, say); deletes it when it no longer matches. */
  async recheck(sha256: string): Promise<boolean> {
    const path = this.pathOf(sha256);
    if (!path) return false;
    const ok = (await hashFile(path)) === sha256;
    if (!ok) await this.evict(sha256);
    return ok;
  }

  /**
   * Deletes a file. The entry (and its bytes in usedBytes) goes only once the data files are gone: a failed unlink
   * leaves it listed with `evictFailed`, so the quota stays honest and the reconciler plans the eviction again.
   * Data first, metadata last: a crash in between leaves a metadata file without data, which init() removes.
   */
  async evict(sha256: string): Promise<void> {
    const entry = this.entries.get(sha256);
    try {
      await rm(this.partPath(sha256), { force: true });
      await rm(this.verifiedPath(sha256), { force: true });
    } catch (error) {
      if (entry) {
        entry.evictFailed = describe(error);
        // What is still there stays counted; a data file that did go no longer is.
        const left = await Promise.all([this.verifiedPath(sha256), this.partPath(sha256)].map((path) => exists(path)));
        if (!left.some(Boolean)) entry.bytesOnDisk = 0;
      }
      throw error;
    }
    this.entries.delete(sha256);
    // The data is gone; a metadata file left behind is removed by init() on the next start.
    await rm(this.metaPath(sha256), { force: true }).catch((error: unknown) =>
      this.options.logger.warn({ err: error, sha256 }, 'could not remove the metadata of an evicted file'),
    );
  }

  private async copyFromFile(url: URL, entry: Entry, options: DownloadOptions): Promise<void> {
    const path = fileURLToPath(url);
    const total = await sizeOf(path);
    if (total === undefined) throw new ModelStoreError('SOURCE_FAILED', `source file not found: ${path}`);
    if (entry.sizeBytes === undefined) entry.sizeBytes = total;
    if (entry.bytesOnDisk >= total) return;
    await this.appendStream(createReadStream(path, { start: entry.bytesOnDisk }), entry, total, options);
  }

  private async fetchHttp(url: URL, entry: Entry, options: DownloadOptions): Promise<void> {
    const from = entry.bytesOnDisk;
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      let response: Response;
      try {
        response = await fetch(url, { headers: from > 0 ? { range: `bytes=${from}-` } : {}, signal: controller.signal });
      } catch (error) {
        throw new ModelStoreError('SOURCE_FAILED', `cannot reach ${redactUrl(url)}: ${describe(error)}`);
      }
      if (response.status === 416 && entry.sizeBytes !== undefined && from === entry.sizeBytes) {
        await response.body?.cancel();
        return;
      }
      if (response.status !== 200 && response.status !== 206) {
        await response.body?.cancel();
        throw new ModelStoreError('SOURCE_FAILED', `HTTP ${response.status} ${response.statusText} from ${redactUrl(url)}`);
      }
      let total: number | undefined;
      if (response.status === 206) {
        const match = /bytes (\d+)-\d+\/(\d+|\*)/.exec(response.headers.get('content-range') ?? '');
        if (!match || Number(match[1]) !== from) {
          await response.body?.cancel();
          throw new ModelStoreError('SOURCE_FAILED', `bad Content-Range from ${redactUrl(url)}: ${response.headers.get('content-range')}`);
        }
        total = match[2] === '*' ? undefined : Number(match[2]);
      } else {
        // The server ignored the range: start over.
        if (from > 0) await truncate(this.partPath(entry.sha256), 0);
        entry.bytesOnDisk = 0;
        const length = response.headers.get('content-length');
        total = length === null ? undefined : Number(length);
      }
      if (total !== undefined && entry.sizeBytes !== undefined && total !== entry.sizeBytes) {
        await response.body?.cancel();
        throw new ModelStoreError('SIZE_MISMATCH', `${redactUrl(url)} has ${total} bytes, the catalog says ${entry.sizeBytes}`);
      }
      if (entry.sizeBytes === undefined && total !== undefined) entry.sizeBytes = total;
      if (!response.body) throw new ModelStoreError('SOURCE_FAILED', `empty response from ${redactUrl(url)}`);
      await this.appendStream(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>), entry, total, options, controller);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  private async appendStream(
    source: Readable,
    entry: Entry,
    total: number | undefined,
    options: DownloadOptions,
    controller?: AbortController,
  ): Promise<void> {
    let lastProgress = 0;
    let stallTimer: NodeJS.Timeout | undefined;
    const stalled = new AbortController();
    const armStall = (): void => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        stalled.abort(new Error(`no data for ${this.stallTimeoutMs} ms`));
        controller?.abort();
      }, this.stallTimeoutMs);
    };
    const report = (force: boolean): void => {
      const now = Date.now();
      if (!options.onProgress || (!force && now - lastProgress < PROGRESS_INTERVAL_MS)) return;
      lastProgress = now;
      options.onProgress({ sha256: entry.sha256, bytes: entry.bytesOnDisk, totalBytes: total });
    };
    const limit = entry.sizeBytes;
    const counter = new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        armStall();
        entry.bytesOnDisk += chunk.length;
        if (limit !== undefined && entry.bytesOnDisk > limit) {
          done(new ModelStoreError('SIZE_MISMATCH', `source sent more than the expected ${limit} bytes`));
          return;
        }
        report(false);
        done(null, chunk);
      },
    });
    armStall();
    const signals = [stalled.signal, ...(options.signal ? [options.signal] : [])];
    try {
      await pipeline(source, counter, createWriteStream(this.partPath(entry.sha256), { flags: 'a' }), { signal: AbortSignal.any(signals) });
      report(true);
    } catch (error) {
      // Keep what arrived: the next attempt resumes from the real size on disk.
      entry.bytesOnDisk = (await sizeOf(this.partPath(entry.sha256))) ?? 0;
      if (error instanceof ModelStoreError) throw error;
      const cause = stalled.signal.aborted ? describe(stalled.signal.reason) : describe(error);
      throw new ModelStoreError('SOURCE_FAILED', `download of ${entry.name} interrupted after ${entry.bytesOnDisk}${total ? ` of ${total}` : ''} bytes: ${cause}`);
    } finally {
      clearTimeout(stallTimer);
      await this.writeMeta(entry).catch(() => undefined);
    }
  }

  private verifiedPath(sha256: string): string {
    return join(this.dir, `${sha256}.gguf`);
  }

  private partPath(sha256: string): string {
    return join(this.dir, `${sha256}.part`);
  }

  private metaPath(sha256: string): string {
    return join(this.dir, `${sha256}.json`);
  }

  private async readMeta(sha256: string): Promise<FileMeta | undefined> {
    try {
      const parsed = JSON.parse(await readFile(this.metaPath(sha256), 'utf8')) as Partial<FileMeta>;
      return {
        sha256,
        name: typeof parsed.name === 'string' ? parsed.name : sha256,
        lastUsedAt: typeof parsed.lastUsedAt === 'number' ? parsed.lastUsedAt : 0,
        pinned: parsed.pinned === true,
        ...(typeof parsed.sizeBytes === 'number' ? { sizeBytes: parsed.sizeBytes } : {}),
      };
    } catch {
      return undefined;
    }
  }

  private async writeMeta(entry: Entry): Promise<void> {
    const meta: FileMeta = { sha256: entry.sha256, name: entry.name, lastUsedAt: entry.lastUsedAt, pinned: entry.pinned };
    if (entry.sizeBytes !== undefined) meta.sizeBytes = entry.sizeBytes;
    // Unique temporary names: concurrent touches of one file must not rename each other's temporary file.
    const tmp = `${this.metaPath(entry.sha256)}.${++this.metaWrites}.tmp`;
    await writeFile(tmp, JSON.stringify(meta));
    await rename(tmp, this.metaPath(entry.sha256));
  }
}

function defaultMeta(sha256: string, now: number): FileMeta {
  return { sha256, name: sha256, lastUsedAt: now, pinned: false };
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return `${error.message}${cause}`;
  }
  return String(error);
}

/** Drops credentials and query strings (signed URLs) from a URL shown in reasons and logs. */
function redactUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}
