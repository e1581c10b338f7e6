// flotilla-models command line: argument parsing and commands, kept apart from the bin entry so tests can call it.
import { parseArgs } from 'node:util';
import { ensureModel } from './cache.js';
import { countParameters, DEFAULT_MODEL_SEED, generateModel } from './generate.js';
import { readGgufHeader } from './gguf.js';
import { isModelFormat, isModelPreset, MODEL_FORMATS, MODEL_PRESETS, PRESETS } from './presets.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const USAGE = `Usage: flotilla-models <command> [options]

Commands:
  generate   Write a llama-architecture GGUF with deterministic pseudo-random weights
             and print one JSON line {path, sha256, sizeBytes, ...}.
  presets    Print the presets and their hyper-parameters as JSON.
  inspect    Print the header of a GGUF file (metadata summary and tensor count) as JSON.

generate options:
  --preset NAME    ${MODEL_PRESETS.join(' | ')} (default tiny)
  --format FORMAT  ${MODEL_FORMATS.join(' | ')} (default q8_0)
  --seed N         non-negative integer (default ${DEFAULT_MODEL_SEED}); same seed, same bytes
  --out PATH       write exactly here; without it the file goes to the model cache
                   ($FLOTILLA_MODEL_CACHE or <repo>/.cache/models) and is reused when present
  --dir PATH       cache directory (without --out)

inspect:
  flotilla-models inspect PATH

  -h, --help       Show this help.
`;

class UsageError extends Error {}

function parseSeed(raw: string | undefined): number {
  if (raw === undefined) return DEFAULT_MODEL_SEED;
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(Number(raw))) throw new UsageError(`--seed must be a non-negative integer, got "${raw}"`);
  return Number(raw);
}

async function generate(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      preset: { type: 'string' },
      format: { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string' },
      dir: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    io.stdout(USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const preset = values.preset ?? 'tiny';
  if (!isModelPreset(preset)) throw new UsageError(`unknown preset "${preset}" (expected ${MODEL_PRESETS.join(', ')})`);
  const format = values.format ?? PRESETS[preset].defaultFormat;
  if (!isModelFormat(format)) throw new UsageError(`unknown format "${format}" (expected ${MODEL_FORMATS.join(', ')})`);
  const seed = parseSeed(values.seed);
  if (values.out !== undefined && values.dir !== undefined) throw new UsageError('use either --out or --dir, not both');
  const started = performance.now();
  const info =
    values.out !== undefined
      ? { ...(await generateModel({ out: values.out, preset, format, seed })), cached: false }
      : await ensureModel(preset, { format, seed, ...(values.dir !== undefined ? { dir: values.dir } : {}) });
  io.stdout(
    `${JSON.stringify({
      path: info.path,
      sha256: info.sha256,
      sizeBytes: info.sizeBytes,
      parameters: info.parameters,
      preset: info.preset,
      format: info.format,
      quantization: info.quantization,
      seed: info.seed,
      contextLength: info.contextLength,
      cached: info.cached,
      elapsedMs: Math.round(performance.now() - started),
    })}\n`,
  );
  return 0;
}

function presets(io: CliIo): number {
  const list = MODEL_PRESETS.map((name) => ({
    name,
    description: PRESETS[name].description,
    parameters: countParameters(name),
    defaultFormat: PRESETS[name].defaultFormat,
    hyperparameters: PRESETS[name].hyperparameters,
  }));
  io.stdout(`${JSON.stringify(list, null, 2)}\n`);
  return 0;
}

async function inspect(args: string[], io: CliIo): Promise<number> {
  const { positionals } = parseArgs({ args, strict: true, allowPositionals: true, options: {} });
  const [path, extra] = positionals;
  if (path === undefined) throw new UsageError('inspect needs a GGUF file path');
  if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
  const header = await readGgufHeader(path);
  const metadata: Record<string, unknown> = {};
  for (const [key, value] of header.metadata) {
    // Long arrays (the vocabulary) are summarised by their length.
    metadata[key] = Array.isArray(value) ? `[${value.length} items]` : typeof value === 'bigint' ? value.toString() : value;
  }
  const parameters = header.tensors.reduce((sum, t) => sum + t.dims.reduce((a, b) => a * b, 1), 0);
  io.stdout(`${JSON.stringify({ version: header.version, tensorCount: header.tensorCount, parameters, alignment: header.alignment, metadata }, null, 2)}\n`);
  return 0;
}

/** Runs the CLI; resolves to the process exit code (0 ok, 1 failure, 2 bad arguments). */
export async function runModelsCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
        throw new UsageError('missing command');
      case '-h':
      case '--help':
      case 'help':
        io.stdout(USAGE);
        return 0;
      case 'generate':
        return await generate(rest, io);
      case 'presets':
        if (rest.includes('--help') || rest.includes('-h')) {
          io.stdout(USAGE);
          return 0;
        }
        if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0]}"`);
        return presets(io);
      case 'inspect':
        return await inspect(rest, io);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (error) {
    const isArgError =
      error instanceof UsageError ||
      (error instanceof TypeError && typeof (error as { code?: unknown }).code === 'string' && String((error as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS'));
    const message = error instanceof Error ? error.message : String(error);
    if (isArgError) {
      io.stderr(`flotilla-models: ${message}\nRun "flotilla-models --help" for usage.\n`);
      return 2;
    }
    io.stderr(`flotilla-models: ${message}\n`);
    return 1;
  }
}
