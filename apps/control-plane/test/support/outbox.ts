import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SimAgent } from '@flotilla/tools/sim';
import { expect } from 'vitest';
import { openDatabase, type Database, type OpenDatabaseOptions } from '../../src/platform/database/index.js';

// What a real agent's outbox produced (read from its data directory) against what the control plane stored: the e2e
// tests use it to prove every acknowledged entry is stored exactly once.

export type OutboxKind = 'telemetry' | 'event' | 'usage';

export interface ProducedEntry {
  seq: number;
  kind: OutboxKind;
  payload: { origin?: string; requestId?: string };
}

/** Everything an agent's outbox produced, from its append-only log (no compaction at the sizes of the tests). */
export async function producedEntries(agent: Pick<SimAgent, 'dataDir'>): Promise<ProducedEntry[]> {
  const text = await readFile(join(agent.dataDir, 'outbox', 'outbox.log'), 'utf8').catch(() => '');
  const lines = text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Partial<ProducedEntry> & { drop?: number; lastSeq?: number });
  // a compaction header or a tombstone would hide entries from this count: the sizes here must not cause either
  expect(lines.filter((line) => line.drop !== undefined || line.lastSeq !== undefined)).toEqual([]);
  return lines as ProducedEntry[];
}

/** The highest seq the agent saw acknowledged (its `outbox.ack`). */
export async function agentAckedSeq(agent: Pick<SimAgent, 'dataDir'>): Promise<number> {
  return Number((await readFile(join(agent.dataDir, 'outbox', 'outbox.ack'), 'utf8').catch(() => '0')).trim()) || 0;
}

export interface StoredComparison {
  deviceId: string;
  /** the control plane's cursor: highest seq it stored and acknowledged */
  cursor: number;
  produced: number;
  got: { telemetry: number; events: number[]; usage: string[] };
  want: { telemetry: number; events: number[]; usage: string[] };
}

/**
 * For each agent (stopped, so its outbox files are final): what the database holds of its outbox entries (telemetry
 * samples in the minute rollups, events by seq, usage rows by request id) and what it should hold — every entry at or
 * below the stored cursor, once. Entries above the cursor were never acknowledged and are still on the agent.
 */
export async function compareStored(
  source: OpenDatabaseOptions | Database,
  agents: readonly Pick<SimAgent, 'deviceId' | 'dataDir'>[],
): Promise<StoredComparison[]> {
  // a running control plane's database (PGlite allows one opener), else opened here and closed after
  const database = 'prisma' in source ? source : await openDatabase(source);
  try {
    const prisma = database.prisma;
    const out: StoredComparison[] = [];
    for (const agent of agents) {
      const id = agent.deviceId;
      const cursor = Number((await prisma.deviceOutboxCursor.findUnique({ where: { deviceId: id } }))?.lastAckedSeq ?? 0n);
      const entries = await producedEntries(agent);
      const stored = entries.filter((entry) => entry.seq <= cursor);
      const telemetry = await prisma.telemetryRollup.aggregate({ where: { deviceId: id, bucketSeconds: 60 }, _sum: { samples: true } });
      const events = await prisma.deviceEvent.findMany({ where: { deviceId: id, seq: { not: null } }, select: { seq: true } });
      const usage = await prisma.inferenceRequest.findMany({ where: { deviceId: id }, select: { requestId: true } });
      out.push({
        deviceId: id,
        cursor,
        produced: entries.length,
        got: {
          telemetry: telemetry._sum.samples ?? 0,
          events: events.map((event) => Number(event.seq)).sort((a, b) => a - b),
          usage: usage.map((row) => row.requestId).sort(),
        },
        want: {
          telemetry: stored.filter((entry) => entry.kind === 'telemetry').length,
          events: stored.filter((entry) => entry.kind === 'event').map((entry) => entry.seq),
          // gateway jobs are recorded by the gateway itself; the outbox carries the local endpoint's usage
          usage: stored
            .filter((entry) => entry.kind === 'usage' && entry.payload.origin === 'local')
            .map((entry) => entry.payload.requestId ?? '')
            .sort(),
        },
      });
    }
    return out;
  } finally {
    if (database !== source) await database.close();
  }
}
