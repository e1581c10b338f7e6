import { readFile } from 'node:fs/promises';

/** CPU time and resident memory of one process, read from /proc (Linux). */
export interface ProcessUsage {
  /** user + system CPU time since the process started, in ms */
  cpuMs: number;
  rssBytes: number;
  /** Date.now() when read */
  at: number;
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux, for every architecture Node runs on). */
const USER_HZ = 100;

/** Reads /proc/<pid>/stat and /proc/<pid>/status; undefined when the process is gone. */
export async function readProcessUsage(pid: number): Promise<ProcessUsage | undefined> {
  try {
    const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')]);
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const rssKb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? 0);
    return { cpuMs: ((utime + stime) * 1000) / USER_HZ, rssBytes: rssKb * 1024, at: Date.now() };
  } catch {
    return undefined;
  }
}

/** CPU used between two readings, in percent of one core (100 = one core busy). */
export function cpuPercent(from: ProcessUsage, to: ProcessUsage): number {
  const wall = to.at - from.at;
  return wall > 0 ? ((to.cpuMs - from.cpuMs) / wall) * 100 : 0;
}

export interface ProcessSample {
  at: number;
  /** percent of one core since the previous sample */
  cpuPercent: number;
  rssBytes: number;
}

/**
 * Samples a process (e.g. `ControlPlaneProcess.pid`, `MosquittoProcess.pid`) every `everyMs`: CPU since the previous
 * sample and RSS. `summary()` gives mean and max over the samples so far.
 */
export class ProcessSampler {
  readonly samples: ProcessSample[] = [];
  private last: ProcessUsage | undefined;
  private readonly timer: NodeJS.Timeout;
  private reading = false;

  constructor(
    readonly pid: number,
    everyMs = 1000,
  ) {
    // read() catches its own failures (a vanished process reads as undefined).
    this.read().catch(() => undefined);
    this.timer = setInterval(() => {
      this.read().catch(() => undefined);
    }, everyMs);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** mean and max CPU (percent of one core) and RSS over the samples taken since `sinceMs` (default all) */
  summary(sinceMs = 0): { samples: number; cpuMeanPercent: number; cpuMaxPercent: number; rssMeanBytes: number; rssMaxBytes: number } {
    const picked = this.samples.filter((s) => s.at >= sinceMs);
    const mean = (values: number[]): number => (values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length);
    return {
      samples: picked.length,
      cpuMeanPercent: mean(picked.map((s) => s.cpuPercent)),
      cpuMaxPercent: Math.max(0, ...picked.map((s) => s.cpuPercent)),
      rssMeanBytes: mean(picked.map((s) => s.rssBytes)),
      rssMaxBytes: Math.max(0, ...picked.map((s) => s.rssBytes)),
    };
  }

  private async read(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const now = await readProcessUsage(this.pid);
      if (!now) return;
      if (this.last) this.samples.push({ at: now.at, cpuPercent: cpuPercent(this.last, now), rssBytes: now.rssBytes });
      this.last = now;
    } finally {
      this.reading = false;
    }
  }
}
