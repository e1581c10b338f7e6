import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';

/** What every result file carries besides the suite's own figures. */
export interface ResultEnvelope<T> {
  suite: string;
  at: string;
  node: string;
  cpus: number;
  memoryBytes: number;
  /** 1-minute load average when the suite started and ended: the box is shared, say how busy it was */
  loadAverage: { start: number; end: number };
  options: Record<string, unknown>;
  result: T;
}

export function envelope<T>(suite: string, options: Record<string, unknown>, startLoad: number, result: T): ResultEnvelope<T> {
  return {
    suite,
    at: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    memoryBytes: totalmem(),
    loadAverage: { start: startLoad, end: loadavg()[0] ?? 0 },
    options,
    result,
  };
}

/** Writes `<dir>/<suite>-<timestamp>.json` and `<dir>/<suite>-latest.json` (each written whole, then renamed). */
export async function writeResult(dir: string, data: ResultEnvelope<unknown>): Promise<string> {
  await mkdir(dir, { recursive: true });
  const text = `${JSON.stringify(data, null, 2)}\n`;
  const file = join(dir, `${data.suite}-${data.at.replace(/[:.]/g, '-')}.json`);
  for (const target of [file, join(dir, `${data.suite}-latest.json`)]) {
    await writeFile(`${target}.tmp`, text);
    await rename(`${target}.tmp`, target);
  }
  return file;
}

/** Every `<suite>-latest.json` in `dir`, by suite name. */
export async function readLatest(dir: string): Promise<Map<string, ResultEnvelope<unknown>>> {
  const out = new Map<string, ResultEnvelope<unknown>>();
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return out;
  }
  for (const name of names.filter((n) => n.endsWith('-latest.json')).sort()) {
    const data = JSON.parse(await readFile(join(dir, name), 'utf8')) as ResultEnvelope<unknown>;
    out.set(data.suite ?? name.replace(/-latest\.json$/, ''), data);
  }
  return out;
}
