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
});
