import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';
import { beforeAll, describe, expect, it } from 'vitest';

const projectDir = join(dirname(fileURLToPath(import.meta.url)), '..');
let child: string;

beforeAll(async () => {
  // The fixture as one ESM file, resolved like the agent bundle (workspace sources, Node conditions).
  child = join(projectDir, '.flotilla', 'test-dist-crash', 'crash-child.mjs');
  await build({
    input: join(projectDir, 'test/fixtures/crash-child.ts'),
    platform: 'node',
    resolve: { conditionNames: ['@flotilla/source', 'node', 'default'] },
    logLevel: 'warn',
    output: { file: child, format: 'esm' },
  });
});

function runChild(mode: 'rejection' | 'exception'): Promise<{ code: number | null; lines: Record<string, unknown>[] }> {
  const proc = spawn(process.execPath, [child, mode, mkdtempSync(join(tmpdir(), 'flotilla-crash-'))], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  proc.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  return new Promise((resolve) =>
    proc.once('exit', (code) => {
      clearTimeout(timer);
      const lines = stdout
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      resolve({ code, lines });
    }),
  );
}

describe('the agent crash handlers in a real process', () => {
  it('log an unhandled rejection (a failed write left floating) at fatal level and exit non-zero', async () => {
    const { code, lines } = await runChild('rejection');
    expect(code).toBe(1);
    const fatal = lines.find((line) => line['level'] === 60);
    expect(fatal).toMatchObject({ kind: 'unhandledRejection', deviceId: 'dev-crash-01', msg: expect.stringMatching(/^unhandled promise rejection: exiting/) });
    expect((fatal?.['err'] as { code?: string; message?: string }).code).toBe('ENOENT');
  });

  it('log an uncaught exception at fatal level and exit non-zero', async () => {
    const { code, lines } = await runChild('exception');
    expect(code).toBe(1);
    expect(lines.find((line) => line['level'] === 60)).toMatchObject({ kind: 'uncaughtException', err: { message: expect.stringMatching(/^cannot write /) } });
  });
});
