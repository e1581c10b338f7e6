import { describe, expect, it } from 'vitest';
import { runCli, type CliIo } from './cli.js';

/** Runs the CLI with no server behind it: every case here ends before a request. */
async function run(argv: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  const result = { code: 0, out: '', err: '' };
  const io: CliIo = {
    out: (text) => (result.out += text),
    err: (text) => (result.err += text),
    readFile: () => Promise.reject(new Error('no file in this test')),
    writeFile: () => Promise.reject(new Error('no file in this test')),
  };
  result.code = await runCli(argv, env, io);
  return result;
}

describe('flotilla CLI arguments', () => {
  it('refuses unknown flags, flags without their value, values on switches and extra arguments, with the usage', async () => {
    const cases: [string[], RegExp][] = [
      [['apply', '--frobnicate'], /^flotilla: Unknown option '--frobnicate'/],
      [['apply', '-f'], /^flotilla: Option '-f, --file <value>' argument missing/],
      [['apply', '--file', '--prune'], /^flotilla: Option '--file' argument is ambiguous/],
      // A switch takes no value: `--prune=false` must not prune.
      [['apply', '-f', 'fleet.yaml', '--prune=false'], /^flotilla: Option '--prune' does not take an argument/],
      [['apply', '-f', 'fleet.yaml', '--dry-run=no'], /^flotilla: Option '--dry-run' does not take an argument/],
      [['apply', 'export'], /^flotilla: unknown argument export\n/],
    ];
    for (const [argv, message] of cases) {
      const result = await run(argv, { FLOTILLA_TOKEN: 'flt_ses_x' });
      expect(result, argv.join(' ')).toMatchObject({ code: 2, out: '', err: expect.stringMatching(message) });
      expect(result.err, argv.join(' ')).toContain('Usage:\n  flotilla apply -f');
    }
  });

  it('takes values inline, separate or short-joined, `-` for standard input, and says what is missing next', async () => {
    for (const argv of [['apply', '--file=fleet.yaml'], ['apply', '-f', '-'], ['apply', '-ffleet.yaml'], ['export', '-o', 'out.yaml', '--server', 'http://127.0.0.1:1']]) {
      // Parsed: the next check is the token.
      expect(await run(argv), argv.join(' ')).toEqual({ code: 2, out: '', err: 'flotilla: no token: pass --token or set FLOTILLA_TOKEN (an admin session token or API key)\n' });
    }
    expect((await run(['apply', '--token', 'flt_ses_x'])).err).toMatch(/^flotilla: apply needs -f <fleet.yaml>/);
    expect((await run(['status', '--token=flt_ses_x'])).err).toMatch(/^flotilla: unknown command status\n/);
  });

  it('prints the usage on stdout when asked and on stderr, failing, when no command is given', async () => {
    for (const argv of [['-h'], ['--help'], ['help'], ['apply', '-h']]) {
      const result = await run(argv);
      expect(result, argv.join(' ')).toMatchObject({ code: 0, err: '', out: expect.stringMatching(/^Usage:\n/) });
    }
    expect(await run([])).toMatchObject({ code: 2, out: '', err: expect.stringMatching(/^Usage:\n/) });
  });
});
