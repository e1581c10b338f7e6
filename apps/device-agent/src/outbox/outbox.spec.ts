import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { testLogger } from '../../test/support/silent-logger.js';
import { Outbox } from './outbox.js';

function newOutbox(dir = mkdtempSync(join(tmpdir(), 'flotilla-outbox-')), maxBytes = 1024 * 1024): Outbox {
  return new Outbox({ dir, maxBytes, logger: testLogger() });
}

describe('Outbox', () => {
  it('assigns increasing seqs, keeps entries until acknowledged, and survives a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-outbox-'));
    const outbox = newOutbox(dir);
    await outbox.open();
    for (let index = 0; index < 5; index++) await outbox.append('telemetry', (seq) => ({ seq, n: index }));
    await outbox.append('usage', (seq) => ({ seq, requestId: 'r' }));
    expect(outbox.pending().map((entry) => entry.seq)).toEqual([1, 2, 3, 4, 5, 6]);
    await outbox.ack(3);
    expect(outbox.pending().map((entry) => entry.seq)).toEqual([4, 5, 6]);
    expect(outbox.pending(4).map((entry) => entry.seq)).toEqual([5, 6]);
    await outbox.close();

    const reopened = newOutbox(dir);
    await reopened.open();
    expect(reopened.pending().map((entry) => [entry.seq, entry.kind])).toEqual([
      [4, 'telemetry'],
      [5, 'telemetry'],
      [6, 'usage'],
    ]);
    expect((await reopened.append('event', (seq) => ({ seq }))).seq).toBe(7);
    await reopened.ack(7);
    expect(reopened.pending()).toEqual([]);
    await reopened.close();
    const again = newOutbox(dir);
    await again.open();
    expect(again.highestSeq).toBe(7);
    expect((await again.append('telemetry', (seq) => ({ seq }))).seq).toBe(8);
  });

  it('when full, drops the oldest telemetry first, then events, usage records last', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-outbox-'));
    const outbox = newOutbox(dir, 600);
    await outbox.open();
    const pad = 'x'.repeat(60);
    await outbox.append('usage', (seq) => ({ seq, pad }));
    await outbox.append('telemetry', (seq) => ({ seq, pad }));
    await outbox.append('event', (seq) => ({ seq, pad }));
    await outbox.append('telemetry', (seq) => ({ seq, pad }));
    await outbox.append('usage', (seq) => ({ seq, pad }));
    await outbox.append('telemetry', (seq) => ({ seq, pad }));
    await outbox.append('telemetry', (seq) => ({ seq, pad }));
    const kinds = outbox.pending().map((entry) => `${entry.kind}:${entry.seq}`);
    expect(kinds).toContain('usage:1');
    expect(kinds).toContain('usage:5');
    expect(kinds).not.toContain('telemetry:2');
    expect(outbox.stats().dropped.telemetry).toBeGreaterThan(0);
    expect(outbox.stats().dropped.usage).toBe(0);
    expect(outbox.stats().bytes).toBeLessThanOrEqual(600);
    await outbox.close();
    const reopened = newOutbox(dir, 600);
    await reopened.open();
    expect(reopened.pending().map((entry) => `${entry.kind}:${entry.seq}`)).toEqual(kinds);
  });

  it('compacts the log once most of it is acknowledged, keeping the seq counter', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-outbox-'));
    const outbox = newOutbox(dir);
    await outbox.open();
    for (let index = 0; index < 1100; index++) await outbox.append('telemetry', (seq) => ({ seq }));
    await outbox.ack(1099);
    await outbox.close();
    const lines = readFileSync(join(dir, 'outbox.log'), 'utf8').trim().split('\n');
    expect(lines).toEqual(['{"lastSeq":1100}', '{"seq":1100,"kind":"telemetry","payload":{"seq":1100}}']);
    const reopened = newOutbox(dir);
    await reopened.open();
    expect(reopened.pending().map((entry) => entry.seq)).toEqual([1100]);
    expect((await reopened.append('telemetry', (seq) => ({ seq }))).seq).toBe(1101);
  });

  it('[P-4.3] sends each pending entry with prevSeq, the entry it holds before it (0 for the oldest), across drops and acks', async () => {
    const outbox = newOutbox(mkdtempSync(join(tmpdir(), 'flotilla-outbox-')), 600);
    await outbox.open();
    const pad = 'x'.repeat(60);
    for (const kind of ['usage', 'telemetry', 'event', 'telemetry', 'usage', 'telemetry', 'telemetry'] as const) await outbox.append(kind, (seq) => ({ seq, pad }));
    const held = outbox.pending().map((entry) => entry.seq);
    expect(held.length).toBeLessThan(7); // the cap dropped telemetry in the middle
    const chain = outbox.pending().map((entry) => [entry.prevSeq, entry.seq]);
    expect(chain).toEqual(held.map((seq, index) => [index === 0 ? 0 : held[index - 1], seq]));
    expect(outbox.pending(held[1]).map((entry) => [entry.prevSeq, entry.seq])).toEqual(chain.slice(2));
    await outbox.ack(held[0] as number);
    expect(outbox.pending().map((entry) => entry.prevSeq)[0]).toBe(0);
    await outbox.close();
  });
});
