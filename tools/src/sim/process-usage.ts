import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** CPU time and resident memory of one process, read from /proc (Linux). */
export interface ProcessUsage {
  /** user + system CPU time since the process started, in ms */
  cpuMs: number;
  rssBytes: number;
  /** Date.now() when read */
  at: number;
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux, for every architecture /** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux, for every architecture Node runs on). */
const USER_HZ = 100;

/** Reads /proc/<pid>/stat and /proc/<pid>/status; undefined when the process is gone. */
export async function readProcessUsage(pid: number): Promise<ProcessUsage | undefined> {
  try {
    const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')]);
    return parseProcessUsage(stat, status);
  } catch {
    return undefined;
  }
}

/** readProcessUsage without awaiting (two small /proc files): for samplers that must read at an exact moment. */
export function readProcessUsageSync(pid: number): ProcessUsage | undefined {
  try {
    return parseProcessUsage(readFileSync(`/proc/${pid}/stat`, 'utf8'), readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return undefined;
  }
}

function parseProcessUsage(stat: string, status: string): ProcessUsage {
  // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const rssKb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? 0);
  return { cpuMs: ((utime + stime) * 1000) / USER_HZ, rssBytes: rssKb * 1024, at: Date.now() };
}

/** CPU used between two readings, in percent of one core (100 = one core busy). */
export function cpuPercent(from: ProcessUsage, to: ProcessUsage): number {
  const wall = to.at - from.at;
  return wall > 0 ? ((to.cpuMs - from.cpuMs) / wall) * 100 : 0;
}

export interface ProcessSample {
  at: number;
  /** percent of one core since the previous sample (summed over the processes) */
  cpuPercent: number;
  rssBytes: number;
}

/** A measurement window (mark() .. window()) of a ProcessSampler. */
export interface SampleWindow {
  /** seconds of wall time in the window */
  seconds: number;
  /** CPU used over the window, in % of one core (100 = one core busy the whole window) */
  cpuPercent: number;
  /** CPU seconds used over the window (the kernel's counters at both ends, not an average of samples) */
  cpuSeconds: number;
  rssMeanBytes: number;
  rssMaxBytes: number;
  rssEndBytes: number;
  samples: number;
}

/**
 * Samples a process (e.g. `ControlPlaneProcess.pid`, `MosquittoProcess.pid`), or a changing set of processes summed
 * (worker processes, database backends), every `everyMs`: CPU since the previous sample and RSS. `summary()` gives
 * mean and max over the samples so far; `mark()` starts a measurement window and `window()` reads it.
 */
export class ProcessSampler {
  readonly samples: ProcessSample[] = [];
  private readonly pids: () => readonly number[];
  private readonly last = new Map<number, ProcessUsage>();
  /** per pid: CPU ms when the window started (or when the process was first seen in it) */
  private readonly windowStart = new Map<number, number>();
  private windowStartedAt = 0;
  private windowRss: number[] = [];
  private lastRss = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(target: number | (() => readonly number[]), everyMs = 1000) {
    this.pids = typeof target === 'number' ? () => [target] : target;
    this.read();
    this.timer = setInterval(() => this.read(), everyMs);
    this.timer.unref();
  }

  static of(pid: number, everyMs = 1000): ProcessSampler {
    return new ProcessSampler(pid, everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** mean and max CPU (percent of one core) and RSS over the samples taken since `sinceMs` (default all) */
  summary(sinceMs = 0): { samples: number; cpuMeanPercent: number; cpuMaxPercent: number; rssMeanBytes: number; rssMaxBytes: number } {
    const picked = this.samples.filter((s) => s.at >= sinceMs);
    return {
      samples: picked.length,
      cpuMeanPercent: mean(picked.map((s) => s.cpuPercent)),
      cpuMaxPercent: Math.max(0, ...picked.map((s) => s.cpuPercent)),
      rssMeanBytes: mean(picked.map((s) => s.rssBytes)),
      rssMaxBytes: Math.max(0, ...picked.map((s) => s.rssBytes)),
    };
  }

  /** Starts (or restarts) a measurement window now. */
  mark(): void {
    this.windowStart.clear();
    this.windowRss = [];
    this.windowStartedAt = Date.now();
    this.read();
  }

  /** The window from the last `mark()` until now (reads once more first). */
  window(): SampleWindow {
    this.read();
    let cpuMs = 0;
    for (const [pid, start] of this.windowStart) cpuMs += (this.last.get(pid)?.cpuMs ?? start) - start;
    const seconds = (Date.now() - this.windowStartedAt) / 1000;
    const rss = this.windowRss;
    return {
      seconds,
      cpuSeconds: cpuMs / 1000,
      cpuPercent: seconds > 0 ? (cpuMs / 1000 / seconds) * 100 : 0,
      rssMeanBytes: mean(rss),
      rssMaxBytes: Math.max(0, ...rss),
      rssEndBytes: this.lastRss,
      samples: rss.length,
    };
  }

  private read(): void {
    let rss = 0;
    let cpu = 0;
    let seen = 0;
    let compared = 0;
    const now = Date.now();
    for (const pid of this.pids()) {
      const usage = readProcessUsageSync(pid);
      if (!usage) continue;
      seen++;
      rss += usage.rssBytes;
      const previous = this.last.get(pid);
      if (previous) {
        cpu += cpuPercent(previous, usage);
        compared++;
      }
      this.last.set(pid, usage);
      if (this.windowStartedAt > 0 && !this.windowStart.has(pid)) this.windowStart.set(pid, usage.cpuMs);
    }
    if (seen === 0) return;
    this.lastRss = rss;
    if (this.windowStartedAt > 0) this.windowRss.push(rss);
    // the first reading of a process has nothing to compare with
    if (compared > 0) this.samples.push({ at: now, cpuPercent: cpu, rssBytes: rss });
  }
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}
