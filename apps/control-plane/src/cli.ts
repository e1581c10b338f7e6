#!/usr/bin/env node
/**
 * `flotilla`: the fleet file from the command line, through the control plane's REST API.
 *
 *   flotilla apply -f fleet.yaml [--dry-run] [--prune]
 *   flotilla export [-o fleet.yaml]
 *
 * The server and an admin token (a session token or an API key with the operator role; viewer is enough for export)
 * come from --server/--token or FLOTILLA_SERVER/FLOTILLA_TOKEN. Plain Node: no Nest, no database.
 */
import { readFile, realpath, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs as parseCommandLine, type ParseArgsConfig } from 'node:util';
import { ApiErrorBodySchema, FleetApplyResultSchema, FleetFileErrorDetailsSchema, type FleetApplyRequest, type FleetChangeAction } from '@flotilla/protocol';

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';

const USAGE = `Usage:
  flotilla apply -f <fleet.yaml | -> [--dry-run] [--prune] [--server URL] [--token TOKEN]
  flotilla export [-o <file>] [--server URL] [--token TOKEN]

  apply   make the control plane match the fleet file (idempotent; prints what changed)
          --dry-run  show what would change, change nothing
          --prune    also delete deployments and models that are not in the file
  export  write the current models, deployments and routing as a fleet file (stdout or -o)

  --server  control plane URL (FLOTILLA_SERVER, default ${DEFAULT_SERVER})
  --token   admin session token or API key (FLOTILLA_TOKEN)
`;

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  /** `-` reads standard input */
  readFile(path: string): Promise<string>;
  writeFile(path: string, text: string): Promise<void>;
}

class UsageError extends Error {}

const OPTIONS = {
  file: { type: 'string', short: 'f' },
  output: { type: 'string', short: 'o' },
  server: { type: 'string' },
  token: { type: 'string' },
  'dry-run': { type: 'boolean' },
  prune: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** Node's own parser, as the agent's CLI uses: unknown flags, missing values and `--prune=false` are usage errors. */
function parseArgs(argv: string[]) {
  let parsed;
  try {
    parsed = parseCommandLine({ args: argv, options: OPTIONS, allowPositionals: true });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const [command, extra] = parsed.positionals;
  if (extra !== undefined) throw new UsageError(`unknown argument ${extra}`);
  const { file, output, server, token, prune = false, help = false } = parsed.values;
  return { command, file, output, server, token, dryRun: parsed.values['dry-run'] ?? false, prune, help };
}

const MARK: Record<FleetChangeAction, string> = { create: '+', update: '~', delete: '-', unchanged: '=' };

/** Runs one command; returns the exit code (0 done, 1 refused or failed, 2 usage). */
export async function runCli(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(argv);
  } catch (error) {
    io.err(`flotilla: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help || args.command === 'help' || args.command === undefined) {
    (args.command === undefined && !args.help ? io.err : io.out)(USAGE);
    return args.command === undefined && !args.help ? 2 : 0;
  }
  const server = (args.server ?? env.FLOTILLA_SERVER ?? DEFAULT_SERVER).replace(/\/+$/, '');
  const token = args.token ?? env.FLOTILLA_TOKEN;
  if (!token) {
    io.err('flotilla: no token: pass --token or set FLOTILLA_TOKEN (an admin session token or API key)\n');
    return 2;
  }
  const headers = { authorization: `Bearer ${token}` };
  try {
    if (args.command === 'apply') {
      if (!args.file) throw new UsageError('apply needs -f <fleet.yaml> (or -f - for standard input)');
      const text = await io.readFile(args.file);
      const res = await fetch(`${server}/api/v1/fleet/apply`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({ yaml: text, dryRun: args.dryRun, prune: args.prune } satisfies FleetApplyRequest),
      });
      const raw: unknown = await res.json().catch(() => undefined);
      if (!res.ok) return failed(io, res.status, raw, args.file);
      const parsed = FleetApplyResultSchema.safeParse(raw);
      if (!parsed.success) throw new Error(`unexpected answer from ${server}/api/v1/fleet/apply (${parsed.error.issues[0]?.message ?? 'not JSON'}): is it a Flotilla control plane of this version?`);
      const body = parsed.data;
      const lines = body.changes
        .filter((c) => c.action !== 'unchanged')
        .map((c) => `  ${MARK[c.action]} ${c.kind} ${c.name}${c.fields?.length ? ` (${c.fields.join(', ')})` : ''}`);
      io.out(`${body.dryRun ? 'dry run, nothing changed: ' : ''}${body.summary}\n${lines.length ? `${lines.join('\n')}\n` : ''}`);
      return 0;
    }
    if (args.command === 'export') {
      const res = await fetch(`${server}/api/v1/fleet/export`, { headers });
      const text = await res.text();
      if (!res.ok) return failed(io, res.status, safeJson(text), undefined);
      if (args.output) {
        await io.writeFile(args.output, text);
        io.err(`wrote ${args.output}\n`);
      } else {
        io.out(text);
      }
      return 0;
    }
    throw new UsageError(`unknown command ${args.command}`);
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`flotilla: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    // fetch() says only "fetch failed"; the reason is in `cause`.
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const message =
      error instanceof TypeError && error.message === 'fetch failed'
        ? `cannot reach the control plane at ${server} (${cause?.code ?? cause?.message ?? 'no answer'}); set --server or FLOTILLA_SERVER`
        : (error as Error).message;
    io.err(`flotilla: ${message}\n`);
    return 1;
  }
}

/** Prints a refusal; the body is the REST error body [P-5.2] when the server is a control plane, else anything. */
function failed(io: CliIo, status: number, raw: unknown, file: string | undefined): number {
  const error = ApiErrorBodySchema.safeParse(raw).data?.error;
  const issues = FleetFileErrorDetailsSchema.safeParse(error?.details).data?.issues;
  if (issues?.length && file) {
    // compiler-style lines, so editors can jump to them
    for (const i of issues) io.err(`${file}:${i.line}:${i.column}: ${i.path ? `${i.path}: ` : ''}${i.message}\n`);
    return 1;
  }
  io.err(`flotilla: ${status} ${error?.code ?? ''} ${error?.message ?? 'request failed'}\n`.replace(/ +/g, ' '));
  return 1;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

async function readInput(path: string): Promise<string> {
  if (path !== '-') return readFile(path, 'utf8');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function isMain(): Promise<boolean> {
  const entry = process.argv[1];
  if (!entry) return false;
  // npm links bin entries: compare real paths.
  return (await realpath(entry).catch(() => entry)) === (await realpath(fileURLToPath(import.meta.url)).catch(() => ''));
}

/** The process entry: `bin/flotilla.mjs` (what npm links) and `node dist/cli.js` both end here. */
export async function main(argv: string[]): Promise<void> {
  process.exitCode = await runCli(argv, process.env, {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    readFile: readInput,
    writeFile: (path, text) => writeFile(path, text, 'utf8'),
  });
}

if (await isMain()) await main(process.argv.slice(2));
