import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Kernel clock ticks per second (utime/stime in /proc/<pid>/stat are counted in these). */
export const CLOCK_TICKS: number = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

export interface ProcReading {
  /** user + system CPU time of the process so far, in seconds */
  cpuSeconds: number;
  /** resident set size in bytes */
  rssBytes: number;
}

/** One reading of /proc/<pid>/stat and /proc/<pid>/status; undefined once the process is gone. */
export function readProc(pid: number): ProcReading | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields that follow start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    const ticks = Number(fields[11]) + Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return { cpuSeconds: ticks / CLOCK_TICKS, rssBytes: rss ? Number(rss[1]) * 1024 : 0 };
  } catch {
    return undefined;
  }
}

/**
 * PostgreSQL backends serving one database: their process title is `postgres: <user> <database> <client> <state>`,
 * so the database's own CPU can be measured apart from other users of a shared server.
 */
export function postgresBackendPids(database: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.startsWith('postgres: ')) continue;
      // Debian prefixes the cluster: `postgres: 15/main: <user> <database> <client> <state>`
      const m = /^postgres: (?:\S+: )?(\S+) (\S+) /.exec(cmdline.replace(/\0/g, ' '));
      if (m?.[2] === database) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

export interface SampleWindow {
  /** seconds of wall time in the window */
  seconds: number;
  /** CPU used over the window, in % of one core (100 = one core busy the whole window) */
  cpuPercent: number;
  /** CPU seconds used over the window */
  cpuSeconds: number;
  rssMeanBytes: number;
  rssMaxBytes: number;
  rssEndBytes: number;
  samples: number;
}

/**
 * Samples the CPU time and RSS of a process (or of a changing set of processes, summed) from /proc at an interval.
 * `mark()` starts a measurement window and `window()` reads it: CPU is the difference of the kernel's counters between
 * the two (not an average of samples), RSS is averaged over the samples taken in between.
 */
export class ProcessSampler {
  private timer: NodeJS.Timeout | undefined;
  /** per pid: CPU seconds at the start of the window (or when first seen in it) and the latest reading */
  private cpu = new Map<number, { first: number; last: number }>();
  private rss: number[] = [];
  private lastRss = 0;
  private startedAt = 0;

  constructor(
    private readonly pids: () => readonly number[],
    private readonly intervalMs = 500,
  ) {}

  static of(pid: number, intervalMs = 500): ProcessSampler {
    return new ProcessSampler(() => [pid], intervalMs);
  }

  /** Starts (or restarts) the window now and samples until `stop()`. */
  mark(): void {
    this.cpu.clear();
    this.rss = [];
    this.startedAt = performance.now();
    this.sample();
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.sample(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** The window from the last `mark()` until now (takes a last sample first). */
  window(): SampleWindow {
    this.sample();
    let cpuSeconds = 0;
    for (const { first, last } of this.cpu.values()) cpuSeconds += last - first;
    const seconds = (performance.now() - this.startedAt) / 1000;
    const rssMeanBytes = this.rss.length ? this.rss.reduce((s, x) => s + x, 0) / this.rss.length : 0;
    return {
      seconds,
      cpuSeconds,
      cpuPercent: seconds > 0 ? (cpuSeconds / seconds) * 100 : 0,
      rssMeanBytes,
      rssMaxBytes: this.rss.length ? Math.max(...this.rss) : 0,
      rssEndBytes: this.lastRss,
      samples: this.rss.length,
    };
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private sample(): void {
    let rss = 0;
    let seen = 0;
    for (const pid of this.pids()) {
      const r = readProc(pid);
      if (!r) continue;
      seen++;
      rss += r.rssBytes;
      const entry = this.cpu.get(pid);
      if (entry) entry.last = r.cpuSeconds;
      else this.cpu.set(pid, { first: r.cpuSeconds, last: r.cpuSeconds });
    }
    if (seen > 0) {
      this.rss.push(rss);
      this.lastRss = rss;
    }
  }
}
