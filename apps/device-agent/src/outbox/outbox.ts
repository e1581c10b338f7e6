import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../logger.js';

/** Outbox entry kinds, in the order they are dropped when the outbox is full (first = dropped first). */
export const OUTBOX_DROP_ORDER = ['telemetry', 'event', 'usage'] as const;
export type OutboxKind = (typeof OUTBOX_DROP_ORDER)[number];

export type OutboxEntry = { seq: number; kind: OutboxKind; payload: Record<string, unknown> };

/** An entry as sent: `prevSeq` is the entry this outbox holds before it (0: none): nothing in between is held [P-4.3]. */
export type PendingEntry = OutboxEntry & { prevSeq: number };

type Stored = OutboxEntry & { bytes: number };

type LogLine = { seq: number; kind: OutboxKind; payload: Record<string, unknown> } | { drop: number } | { lastSeq: number };

export type OutboxOptions = {
  dir: string;
  maxBytes: number;
  logger: Logger;
};

/**
 * Store-and-forward for telemetry, events and usage records [P-4]. One sequence space for every kind.
 *
 * On disk: `outbox.log`, append-only JSON lines (an entry, a `{"drop":seq}` tombstone, or a `{"lastSeq":n}`
 * header written by compaction), and `outbox.ack` with the highest acknowledged seq. An entry is deleted only when
 * the control plane acknowledges its seq (cumulatively); the log is rewritten once most of it is dead.
 *
 * Drop policy when the live entries exceed `maxBytes`: drop the oldest telemetry first, then the oldest events,
 * and usage records (billing-relevant) only when nothing else is left.
 */
export class Outbox {
  /** live entries in seq order from `head`; acknowledged ones before `head` are cut off in batches (O(1) per ack) */
  private entries: Stored[] = [];
  private head = 0;
  private liveBytes = 0;
  private deadLines = 0;
  private ackedSeq = 0;
  private lastSeq = 0;
  private dropped: Record<OutboxKind, number> = { telemetry: 0, event: 0, usage: 0 };
  private writes: Promise<void> = Promise.resolve();

  constructor(private readonly options: OutboxOptions) {}

  private get logPath(): string {
    return join(this.options.dir, 'outbox.log');
  }

  private get ackPath(): string {
    return join(this.options.dir, 'outbox.ack');
  }

  async open(): Promise<void> {
    await mkdir(this.options.dir, { recursive: true });
    this.ackedSeq = Number((await readFile(this.ackPath, 'utf8').catch(() => '0')).trim()) || 0;
    this.lastSeq = this.ackedSeq;
    const text = await readFile(this.logPath, 'utf8').catch(() => '');
    const bySeq = new Map<number, Stored>();
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        // A torn last line from a crash mid-write: everything before it is intact.
        this.options.logger.warn('outbox: skipping an unreadable line');
        continue;
      }
      if ('lastSeq' in parsed) this.lastSeq = Math.max(this.lastSeq, parsed.lastSeq);
      else if ('drop' in parsed) {
        bySeq.delete(parsed.drop);
        this.deadLines++;
      } else {
        this.lastSeq = Math.max(this.lastSeq, parsed.seq);
        if (parsed.seq > this.ackedSeq) bySeq.set(parsed.seq, { ...parsed, bytes: Buffer.byteLength(line) + 1 });
        else this.deadLines++;
      }
    }
    this.entries = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
    this.head = 0;
    this.liveBytes = this.entries.reduce((sum, entry) => sum + entry.bytes, 0);
  }

  /** Assigns the next seq, persists the entry (the build callback puts seq into the payload) and returns it. */
  async append(kind: OutboxKind, build: (seq: number) => Record<string, unknown>): Promise<OutboxEntry> {
    const seq = ++this.lastSeq;
    const payload = build(seq);
    const line = JSON.stringify({ seq, kind, payload });
    const entry: Stored = { seq, kind, payload, bytes: Buffer.byteLength(line) + 1 };
    this.entries.push(entry);
    this.liveBytes += entry.bytes;
    await this.write(() => appendFile(this.logPath, `${line}\n`));
    await this.enforceCap();
    return { seq, kind, payload };
  }

  /** The control plane stored everything up to `upToSeq`. */
  async ack(upToSeq: number): Promise<void> {
    if (upToSeq <= this.ackedSeq) return;
    this.ackedSeq = Math.min(upToSeq, this.lastSeq);
    for (let first = this.entries[this.head]; first && first.seq <= this.ackedSeq; first = this.entries[this.head]) {
      this.liveBytes -= first.bytes;
      this.head++;
      this.deadLines++;
    }
    // Cut the acknowledged prefix once it is most of the array: amortised O(1) per removed entry.
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    const acked = this.ackedSeq;
    await this.write(async () => {
      await writeFile(`${this.ackPath}.tmp`, String(acked));
      await rename(`${this.ackPath}.tmp`, this.ackPath);
    });
    if (this.deadLines > 1000 && this.deadLines > this.size) await this.compact();
  }

  /**
   * Entries not yet acknowledged with seq > afterSeq, oldest first, each with the seq of the entry held before it
   * (0 for the oldest held): the control plane stores an entry only once it has stored everything back to prevSeq,
   * so it moves over a gap only where this outbox says it holds nothing [P-4.3].
   */
  pending(afterSeq = 0): PendingEntry[] {
    let low = this.head;
    let high = this.entries.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if ((this.entries[mid] as Stored).seq <= afterSeq) low = mid + 1;
      else high = mid;
    }
    const result: PendingEntry[] = [];
    let prevSeq = low > this.head ? (this.entries[low - 1] as Stored).seq : 0;
    for (let index = low; index < this.entries.length; index++) {
      const { seq, kind, payload } = this.entries[index] as Stored;
      result.push({ seq, kind, payload, prevSeq });
      prevSeq = seq;
    }
    return result;
  }

  get ackedUpTo(): number {
    return this.ackedSeq;
  }

  stats(): { entries: number; bytes: number; lastSeq: number; ackedSeq: number; dropped: Record<OutboxKind, number> } {
    return { entries: this.size, bytes: this.liveBytes, lastSeq: this.lastSeq, ackedSeq: this.ackedSeq, dropped: { ...this.dropped } };
  }

  private get size(): number {
    return this.entries.length - this.head;
  }

  get highestSeq(): number {
    return this.lastSeq;
  }

  async close(): Promise<void> {
    await this.writes;
  }

  private async enforceCap(): Promise<void> {
    const tombstones: number[] = [];
    while (this.liveBytes > this.options.maxBytes && this.size > 1) {
      const oldestOf = (kind: OutboxKind): number => this.entries.findIndex((entry, index) => index >= this.head && entry.kind === kind);
      const index = OUTBOX_DROP_ORDER.map(oldestOf).find((found) => found >= 0) ?? -1;
      if (index < 0) break;
      const [victim] = this.entries.splice(index, 1);
      if (!victim) break;
      this.liveBytes -= victim.bytes;
      this.dropped[victim.kind]++;
      tombstones.push(victim.seq);
    }
    if (tombstones.length === 0) return;
    this.options.logger.warn({ dropped: tombstones.length, maxBytes: this.options.maxBytes }, 'outbox full: dropped the oldest entries by policy');
    this.deadLines += tombstones.length;
    await this.write(() => appendFile(this.logPath, tombstones.map((seq) => `${JSON.stringify({ drop: seq })}\n`).join('')));
  }

  private async compact(): Promise<void> {
    const lines = [JSON.stringify({ lastSeq: this.lastSeq }), ...this.entries.slice(this.head).map(({ seq, kind, payload }) => JSON.stringify({ seq, kind, payload }))];
    await this.write(async () => {
      await writeFile(`${this.logPath}.tmp`, `${lines.join('\n')}\n`);
      await rename(`${this.logPath}.tmp`, this.logPath);
    });
    this.deadLines = 0;
  }

  /** Serialises file writes so appends, tombstones and compaction never interleave. */
  private write(operation: () => Promise<void>): Promise<void> {
    const next = this.writes.then(operation);
    this.writes = next.catch((error: unknown) => this.options.logger.error({ err: error }, 'outbox write failed'));
    return next;
  }
}
