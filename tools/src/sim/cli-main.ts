// flotilla-sim command line: flags, the scenario script and the live summary, kept apart from the bin entry.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { startSimFleet, summaryLine, type SimFleet, type SimFleetOptions } from './sim-fleet.js';
import type { HardwareProfile, SimBehaviour } from './sim-device.js';

export interface SimCliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** interactive verbs, one per line (the CLI passes stdin when it is a TTY) */
  lines?: AsyncIterable<string>;
  /** rewrite the summary in place (a TTY) instead of printing a line per second */
  tty?: boolean;
  /** resolves when the user asks to stop (SIGINT) */
  interrupted?: Promise<void>;
}

export const SIM_USAGE = `Usage: flotilla-sim [options]

Simulated Flotilla devices (light MQTT clients speaking the agent's protocol) against a control plane,
or, with --plain, against any MQTT broker.

Target:
  --cp URL                  control plane base URL (enrollment), e.g. http://127.0.0.1:8080
  --admin-token TOKEN       admin bearer that mints enrollment tokens ($FLOTILLA_TOKEN)
  --enrollment-token TOKEN  an enrollment token with enough uses (instead of --admin-token)
  --mqtt URL                broker to dial instead of the enrolled URL (required with --plain)
  --plain                   no enrollment, no acks expected (a plain broker with allow_anonymous)
  --credentials FILE        load devices from FILE (re-join without enrolling) and save new ones to it

Fleet:
  --devices N               devices joined at start (default 0; ignored when --script joins)
  --name-prefix P           device names <P>-<n> (default sim)
  --devices-per-address N   devices per source address in 127.0.0.0/8 (default 20)
  --no-spread               dial from the default source address
  --connect-rate N          connects started per second (default: all at once)
  --proxy                   route MQTT through a blackholing proxy (needed for cut)
  --telemetry-interval S    seconds between telemetry entries (default 5)
  --keepalive S             MQTT keepalive in seconds (default 5)
  --resend-after S          resend unacknowledged entries after S seconds (default 30; 0: never)
  --memory GB  --cores N  --gpu NAME:VRAM_GB  --label KEY=VALUE (repeatable)   hardware profile
  --download-ms MS  --load-ms MS  --model-failure-rate P                       model behaviour
  --ttft-ms MS  --tokens-per-second N  --inference-error-rate P                inference behaviour

Scenario:
  --script "VERBS"          verbs separated by ';', run in order, then exit:
                              join N | wait 30s|500ms | crash K | silence K | cut K | heal | revive
                              | saturate CONCURRENCY DURATION [MODEL] | stats | stop
                            without --script, verbs are read from stdin when it is a terminal;
                            Ctrl-C stops
  --gateway-url URL         gateway for saturate (default <cp>/v1)
  --api-key KEY             gateway API key for saturate ($FLOTILLA_API_KEY)
  --model NAME              model for saturate
  --summary-interval S      seconds between summary lines (default 1; 0: none)
  --json                    print the final stats as one JSON line
  -h, --help                show this help
`;

class UsageError extends Error {}

const OPTIONS = {
  cp: { type: 'string' },
  'admin-token': { type: 'string' },
  'enrollment-token': { type: 'string' },
  mqtt: { type: 'string' },
  plain: { type: 'boolean' },
  credentials: { type: 'string' },
  devices: { type: 'string' },
  'name-prefix': { type: 'string' },
  'devices-per-address': { type: 'string' },
  'no-spread': { type: 'boolean' },
  'connect-rate': { type: 'string' },
  proxy: { type: 'boolean' },
  'telemetry-interval': { type: 'string' },
  keepalive: { type: 'string' },
  'resend-after': { type: 'string' },
  memory: { type: 'string' },
  cores: { type: 'string' },
  gpu: { type: 'string', multiple: true },
  label: { type: 'string', multiple: true },
  'download-ms': { type: 'string' },
  'load-ms': { type: 'string' },
  'model-failure-rate': { type: 'string' },
  'ttft-ms': { type: 'string' },
  'tokens-per-second': { type: 'string' },
  'inference-error-rate': { type: 'string' },
  script: { type: 'string' },
  'gateway-url': { type: 'string' },
  'api-key': { type: 'string' },
  model: { type: 'string' },
  'summary-interval': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function num(raw: string | undefined, flag: string, { min = 0, max = Number.MAX_SAFE_INTEGER, integer = false } = {}): number | undefined {
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new UsageError(`--${flag} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got "${raw}"`);
  }
  return value;
}

function url(raw: string | undefined, flag: string, protocols: readonly string[]): string | undefined {
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new UsageError(`--${flag} must be a URL, got "${raw}"`);
  }
  if (!protocols.includes(parsed.protocol)) throw new UsageError(`--${flag} must be a ${protocols.join(' or ')} URL, got "${raw}"`);
  return raw.replace(/\/$/, '');
}

/** `30s`, `500ms`, `2m` or plain seconds -> milliseconds */
export function parseDuration(raw: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(raw.trim());
  if (!match) throw new UsageError(`bad duration "${raw}" (e.g. 30s, 500ms, 2m)`);
  const value = Number(match[1]);
  return match[2] === 'ms' ? value : match[2] === 'm' ? value * 60_000 : value * 1000;
}

export type Verb =
  | { verb: 'join' | 'crash' | 'silence' | 'cut'; n: number }
  | { verb: 'wait'; ms: number }
  | { verb: 'heal' | 'revive' | 'stats' | 'stop' }
  | { verb: 'saturate'; concurrency: number; ms: number; model?: string };

/** Parses one verb (`join 100`, `wait 30s`, `saturate 16 30s`, ...); throws a usage error naming it. */
export function parseVerb(text: string): Verb {
  const [name, ...args] = text.trim().split(/\s+/);
  const count = (): number => {
    const n = Number(args[0]);
    if (args.length !== 1 || !Number.isInteger(n) || n < 0) throw new UsageError(`"${text.trim()}": ${name} takes one non-negative integer`);
    return n;
  };
  switch (name) {
    case 'join':
    case 'crash':
    case 'silence':
    case 'cut':
      return { verb: name, n: count() };
    case 'wait':
      if (args.length !== 1) throw new UsageError(`"${text.trim()}": wait takes one duration`);
      return { verb: 'wait', ms: parseDuration(args[0] as string) };
    case 'heal':
    case 'revive':
    case 'stats':
    case 'stop':
    case 'quit':
      if (args.length > 0) throw new UsageError(`"${text.trim()}": ${name} takes no argument`);
      return { verb: name === 'quit' ? 'stop' : name };
    case 'saturate': {
      const concurrency = Number(args[0]);
      if (args.length < 2 || args.length > 3 || !Number.isInteger(concurrency) || concurrency < 1) {
        throw new UsageError(`"${text.trim()}": saturate takes CONCURRENCY DURATION [MODEL]`);
      }
      return { verb: 'saturate', concurrency, ms: parseDuration(args[1] as string), ...(args[2] ? { model: args[2] } : {}) };
    }
    default:
      throw new UsageError(`unknown verb "${name ?? ''}" (join, wait, crash, silence, cut, heal, revive, saturate, stats, stop)`);
  }
}

export function parseScript(script: string): Verb[] {
  return script
    .split(/[;\n]/)
    .map((part) => part.trim())
    .filter((part) => part.length > 0)
    .map(parseVerb);
}

interface Parsed {
  fleet: SimFleetOptions;
  devices: number;
  script: Verb[] | undefined;
  gatewayUrl: string | undefined;
  apiKey: string | undefined;
  model: string | undefined;
  summaryMs: number;
  json: boolean;
}

function parse(argv: string[]): Parsed | 'help' {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: true });
  if (values.help) return 'help';
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const plain = values.plain === true;
  const cp = url(values.cp, 'cp', ['http:', 'https:']);
  const mqtt = url(values.mqtt, 'mqtt', ['mqtt:']);
  const adminToken = values['admin-token'] ?? process.env.FLOTILLA_TOKEN;
  if (plain && !mqtt) throw new UsageError('--plain needs --mqtt URL');
  if (!plain && !cp) throw new UsageError('--cp URL is required (or --plain --mqtt URL)');
  if (!plain && !adminToken && !values['enrollment-token'] && !values.credentials) throw new UsageError('--admin-token (or --enrollment-token, or --credentials FILE) is required to enroll devices');
  const hardware: Partial<HardwareProfile> = {};
  const memory = num(values.memory, 'memory', { min: 0.01 });
  if (memory !== undefined) hardware.memoryBytes = Math.round(memory * 1024 ** 3);
  const cores = num(values.cores, 'cores', { min: 1, max: 4096, integer: true });
  if (cores !== undefined) hardware.cores = cores;
  if (values.gpu) {
    hardware.gpus = values.gpu.map((spec) => {
      const [name, vram] = spec.split(':');
      const gb = Number(vram);
      if (!name || !Number.isFinite(gb) || gb <= 0) throw new UsageError(`--gpu must be NAME:VRAM_GB, got "${spec}"`);
      return { name, vramBytes: Math.round(gb * 1024 ** 3) };
    });
  }
  if (values.label) {
    hardware.labels = Object.fromEntries(
      values.label.map((pair) => {
        const at = pair.indexOf('=');
        if (at < 1) throw new UsageError(`--label must be KEY=VALUE, got "${pair}"`);
        return [pair.slice(0, at), pair.slice(at + 1)];
      }),
    );
  }
  const behaviour: Partial<Omit<SimBehaviour, 'hardware'>> & { hardware?: Partial<HardwareProfile> } = { hardware, mode: plain ? 'plain' : 'control-plane' };
  const set = <K extends keyof SimBehaviour>(key: K, value: SimBehaviour[K] | undefined): void => {
    if (value !== undefined) (behaviour as Partial<SimBehaviour>)[key] = value;
  };
  const seconds = (raw: string | undefined, flag: string, min: number): number | undefined => {
    const value = num(raw, flag, { min, max: 3600 });
    return value === undefined ? undefined : value * 1000;
  };
  set('telemetryIntervalMs', seconds(values['telemetry-interval'], 'telemetry-interval', 0.1));
  const keepalive = num(values.keepalive, 'keepalive', { min: 1, max: 3600, integer: true });
  set('keepaliveSeconds', keepalive);
  set('resendAfterMs', seconds(values['resend-after'], 'resend-after', 0));
  set('downloadMs', num(values['download-ms'], 'download-ms'));
  set('loadMs', num(values['load-ms'], 'load-ms'));
  set('modelFailureRate', num(values['model-failure-rate'], 'model-failure-rate', { max: 1 }));
  set('ttftMs', num(values['ttft-ms'], 'ttft-ms'));
  set('tokensPerSecond', num(values['tokens-per-second'], 'tokens-per-second', { min: 0.1 }));
  set('inferenceErrorRate', num(values['inference-error-rate'], 'inference-error-rate', { max: 1 }));
  const script = values.script === undefined ? undefined : parseScript(values.script);
  const connectRate = num(values['connect-rate'], 'connect-rate', { min: 1 });
  const perAddress = num(values['devices-per-address'], 'devices-per-address', { min: 1, max: 100_000, integer: true });
  const enrollmentToken = values['enrollment-token'];
  const fleet: SimFleetOptions = {
    ...(cp ? { controlPlaneUrl: cp } : {}),
    ...(adminToken ? { adminToken } : {}),
    ...(enrollmentToken ? { enrollmentToken } : {}),
    ...(mqtt ? { mqttUrl: mqtt } : {}),
    ...(values.credentials ? { credentialsFile: values.credentials } : {}),
    ...(values['name-prefix'] ? { namePrefix: values['name-prefix'] } : {}),
    ...(perAddress === undefined ? {} : { devicesPerAddress: perAddress }),
    ...(values['no-spread'] ? { spreadAddresses: false } : {}),
    ...(connectRate === undefined ? {} : { connectRatePerSecond: connectRate }),
    ...(values.proxy ? { proxy: true } : {}),
    behaviour,
  };
  if (values['name-prefix'] !== undefined && !/^[a-z0-9][a-z0-9_-]{0,40}$/.test(values['name-prefix'])) throw new UsageError('--name-prefix: lowercase letters, digits, _ and -');
  const gatewayUrl = url(values['gateway-url'], 'gateway-url', ['http:', 'https:']) ?? (cp ? `${cp}/v1` : undefined);
  const apiKey = values['api-key'] ?? process.env.FLOTILLA_API_KEY;
  if (script?.some((v) => v.verb === 'saturate')) {
    if (!gatewayUrl) throw new UsageError('saturate needs --gateway-url or --cp');
    if (!apiKey) throw new UsageError('saturate needs --api-key');
    if (!values.model && script.some((v) => v.verb === 'saturate' && !v.model)) throw new UsageError('saturate needs --model (or a MODEL after the duration)');
  }
  if (script?.some((v) => v.verb === 'cut') && !values.proxy) throw new UsageError('cut needs --proxy');
  return {
    fleet,
    devices: num(values.devices, 'devices', { max: 1_000_000, integer: true }) ?? 0,
    script,
    gatewayUrl,
    apiKey,
    model: values.model,
    summaryMs: (num(values['summary-interval'], 'summary-interval', { max: 3600 }) ?? 1) * 1000,
    json: values.json === true,
  };
}

/** Runs the CLI; resolves with the exit code (2: bad usage, 1: failure). */
export async function runSimCli(argv: string[], io: SimCliIo): Promise<number> {
  let parsed: Parsed | 'help';
  try {
    parsed = parse(argv);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    io.stderr(`flotilla-sim: ${message}\nRun flotilla-sim --help for the options.\n`);
    return 2;
  }
  if (parsed === 'help') {
    io.stdout(SIM_USAGE);
    return 0;
  }
  const options = parsed;
  let fleet: SimFleet | undefined;
  let summaryTimer: NodeJS.Timeout | undefined;
  try {
    fleet = await startSimFleet(options.fleet);
    const live = fleet;
    if (options.summaryMs > 0) {
      summaryTimer = setInterval(() => {
        const line = summaryLine(live.stats());
        io.stdout(io.tty ? `\r\x1b[2K${line}` : `${line}\n`);
      }, options.summaryMs);
    }
    const say = (text: string): void => io.stdout(`${io.tty ? '\r\x1b[2K' : ''}${text}\n`);
    const run = async (verb: Verb): Promise<boolean> => {
      switch (verb.verb) {
        case 'join': {
          const started = Date.now();
          await live.join(verb.n);
          say(`joined ${verb.n} devices in ${Date.now() - started} ms`);
          return true;
        }
        case 'wait':
          await Promise.race([new Promise((done) => setTimeout(done, verb.ms)), io.interrupted ?? new Promise(() => undefined)]);
          return true;
        case 'crash':
          say(`crashed ${live.crash(verb.n).length}`);
          return true;
        case 'silence':
          say(`silenced ${live.silence(verb.n).length}`);
          return true;
        case 'cut':
          say(`cut ${live.cut(verb.n).length}`);
          return true;
        case 'heal':
          live.heal();
          say('healed');
          return true;
        case 'revive':
          say(`revived ${live.revive().length}`);
          return true;
        case 'stats':
          say(JSON.stringify(live.stats()));
          return true;
        case 'saturate': {
          const model = verb.model ?? options.model;
          if (!options.gatewayUrl || !options.apiKey || !model) throw new UsageError('saturate needs --gateway-url/--cp, --api-key and a model');
          const result = await live.saturateGateway({ gatewayUrl: options.gatewayUrl, apiKey: options.apiKey, model, concurrency: verb.concurrency, durationMs: verb.ms });
          say(`saturate: ${JSON.stringify(result)}`);
          return true;
        }
        case 'stop':
          return false;
      }
    };
    const script = options.script ?? [];
    if (!script.some((v) => v.verb === 'join') && options.devices > 0) await run({ verb: 'join', n: options.devices });
    if (options.script) {
      for (const verb of script) if (!(await run(verb))) break;
    } else {
      // Interactive (stdin is a terminal) or until Ctrl-C.
      const lines = io.lines;
      const byLines = (async () => {
        if (!lines) return new Promise<void>(() => undefined);
        for await (const line of lines) {
          if (line.trim() === '') continue;
          try {
            if (!(await run(parseVerb(line)))) return;
          } catch (error) {
            say(`error: ${error instanceof Error ? error.message : String(error)}`);
          }
        }
      })();
      await Promise.race([byLines, io.interrupted ?? new Promise(() => undefined)]);
    }
    clearInterval(summaryTimer);
    const final = live.stats();
    say(summaryLine(final));
    if (options.json) io.stdout(`${JSON.stringify(final)}\n`);
    await live.stop();
    return 0;
  } catch (error) {
    clearInterval(summaryTimer);
    io.stderr(`${io.tty ? '\n' : ''}flotilla-sim: ${error instanceof Error ? error.message : String(error)}\n`);
    await fleet?.stop({ graceful: false }).catch(() => undefined);
    return error instanceof UsageError ? 2 : 1;
  }
}

/** stdin as lines when it is a terminal (interactive verbs), else undefined */
export function terminalLines(): AsyncIterable<string> | undefined {
  if (!process.stdin.isTTY) return undefined;
  return createInterface({ input: process.stdin, terminal: false });
}
