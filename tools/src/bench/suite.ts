/** Command-line flags of `npm run bench -- <suite>... --flag value --switch`. */
export class Flags {
  constructor(private readonly values: ReadonlyMap<string, string | true>) {}

  static parse(args: readonly string[]): { suites: string[]; flags: Flags } {
    const suites: string[] = [];
    const values = new Map<string, string | true>();
    for (let i = 0; i < args.length; i++) {
      const arg = args[i] ?? '';
      if (!arg.startsWith('--')) {
        suites.push(arg);
        continue;
      }
      const eq = arg.indexOf('=');
      if (eq > 0) {
        values.set(arg.slice(2, eq), arg.slice(eq + 1));
        continue;
      }
      const next = args[i + 1];
      if (next !== undefined && !next.startsWith('--') && /^[-\d.,:/a-z]/i.test(next) && !SWITCHES.has(arg.slice(2))) {
        values.set(arg.slice(2), next);
        i++;
      } else values.set(arg.slice(2), true);
    }
    return { suites, flags: new Flags(values) };
  }

  has(name: string): boolean {
    return this.values.has(name);
  }

  bool(name: string): boolean {
    const v = this.values.get(name);
    return v === true || v === 'true' || v === '1' || v === 'yes';
  }

  string(name: string, fallback: string): string {
    const v = this.values.get(name);
    return typeof v === 'string' ? v : fallback;
  }

  number(name: string, fallback: number): number {
    const v = this.values.get(name);
    if (typeof v !== 'string') return fallback;
    const n = Number(v.replace(/_/g, '').replace(/k$/i, '000'));
    if (!Number.isFinite(n)) throw new Error(`--${name}: not a number: ${v}`);
    return n;
  }

  /** `--devices 1000,5000` or `--devices 1k,5k` */
  numbers(name: string, fallback: readonly number[]): number[] {
    const v = this.values.get(name);
    if (typeof v !== 'string') return [...fallback];
    return v.split(',').map((s) => {
      const n = Number(s.trim().replace(/_/g, '').replace(/k$/i, '000'));
      if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: not a positive number: ${s}`);
      return n;
    });
  }

  entries(): Record<string, string | true> {
    return Object.fromEntries(this.values);
  }
}

/** Flags that never take a value. */
const SWITCHES = new Set(['no-rate-limit', 'quick', 'pglite', 'no-postgres', 'verbose', 'no-build', 'help', 'no-mosquitto']);

export interface SuiteContext {
  root: string;
  resultsDir: string;
  quick: boolean;
  flags: Flags;
  log(line: string): void;
}

export interface SuiteOutcome {
  /** the options the suite actually ran with (sizes, durations...) */
  options: Record<string, unknown>;
  /** the figures, written to JSON */
  result: unknown;
  /** the lines printed at the end: each figure with its same-run peer and ratio */
  summary: string[];
}

export interface Suite {
  name: string;
  description: string;
  /** flags this suite reads, for --help */
  flagsHelp: string[];
  run(ctx: SuiteContext): Promise<SuiteOutcome>;
}
