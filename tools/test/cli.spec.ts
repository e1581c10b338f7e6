import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runModelsCli } from '../src/models/index.js';
import { makeTempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('models-cli'));
});
afterAll(async () => {
  await cleanup();
});

async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runModelsCli(argv, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { code, stdout, stderr };
}

describe('flotilla-models CLI', () => {
  it('generates a model to --out and prints one JSON line', async () => {
    const out = join(dir, 'cli-tiny.gguf');
    const { code, stdout, stderr } = await run('generate', '--preset', 'tiny', '--format', 'f16', '--out', out, '--seed', '3');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(stdout.trim().split('\n')).toHaveLength(1);
    const line = JSON.parse(stdout) as { path: string; sha256: string; sizeBytes: number; format: string; seed: number };
    expect(line).toMatchObject({ path: out, format: 'f16', seed: 3 });
    const bytes = await readFile(out);
    expect(line.sizeBytes).toBe(bytes.length);
    expect(line.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
  });

  it('generates into a cache directory without --out and reuses it', async () => {
    const first = JSON.parse((await run('generate', '--dir', dir)).stdout) as { cached: boolean; path: string };
    const second = JSON.parse((await run('generate', '--dir', dir)).stdout) as { cached: boolean; path: string };
    expect(first.cached).toBe(false);
    expect(second).toMatchObject({ cached: true, path: first.path });
  });

  it('prints help, presets and a file header', async () => {
    const help = await run('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: flotilla-models');
    expect(help.stdout).toContain('--preset');
    expect((await run('generate', '--help')).code).toBe(0);
    const presets = JSON.parse((await run('presets')).stdout) as Array<{ name: string; parameters: number }>;
    expect(presets.map((p) => p.name)).toEqual(['tiny', 'bench']);
    expect(presets[1]!.parameters).toBeGreaterThan(90_000_000);
    const inspected = JSON.parse((await run('inspect', join(dir, 'cli-tiny.gguf'))).stdout) as { metadata: Record<string, unknown> };
    expect(inspected.metadata['general.architecture']).toBe('llama');
  });

  it.each([
    [['generate', '--preset', 'huge'], /unknown preset "huge"/],
    [['generate', '--format', 'q4_k_m'], /unknown format/],
    [['generate', '--seed', 'abc'], /--seed must be a non-negative integer/],
    [['generate', '--bogus'], /Unknown option '--bogus'/],
    [['generate', '--out', 'a', '--dir', 'b'], /either --out or --dir/],
    [['generate', 'extra'], /unexpected argument/],
    [['frobnicate'], /unknown command/],
    [[], /missing command/],
    [['inspect'], /needs a GGUF file path/],
  ])('exits with code 2 and a clear message for %j', async (argv, message) => {
    const { code, stdout, stderr } = await run(...argv);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    expect(stderr).toContain('--help');
  });

  it('exits with code 1 when the work itself fails', async () => {
    const { code, stderr } = await run('inspect', join(dir, 'missing.gguf'));
    expect(code).toBe(1);
    expect(stderr).toMatch(/ENOENT/);
  });
});
