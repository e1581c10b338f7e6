import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { makeTelemetry } from '@flotilla/protocol/testing';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { IngestStats } from '../../src/devices/ingest/ingest-stats.js';
import { OutboxIngestService } from '../../src/devices/ingest/outbox-ingest.service.js';
import { api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';

/** Issue 11, causes 1 and 4: writes that grow with the fleet, at a fleet's size. */
const FLEET = 5000;

describeBackends('ingest at fleet scale', (backend) => {
  let t: TestControlPlane;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  /** error-level log lines of the control plane (message and error), to show why a write failed */
  const errors: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        const parsed = JSON.parse(line) as { msg: string; err?: { message?: string } };
        errors.push(`${parsed.msg}: ${parsed.err?.message?.slice(0, 200) ?? ''}`);
      }
      done();
    },
  });

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    // flushes only when the test asks; a long grace so the restart below decides when it ends
    t = await startTestControlPlane(backend, {
      FLOTILLA_INGEST_FLUSH_ENTRIES: '100000',
      FLOTILLA_INGEST_FLUSH_MS: '60000',
      FLOTILLA_DEVICE_RECONNECT_GRACE_S: '2',
    }, pino({ level: 'error' }, sink));
  }, 60_000);

  beforeEach(() => {
    errors.length = 0;
  });

  afterAll(async () => {
    await t?.dispose();
    process.off('unhandledRejection', onUnhandled);
  });

  async function insertDevices(prefix: string, data: { status: 'online' | 'offline'; lastSeenAt: Date | null }): Promise<string[]> {
    const ids = Array.from({ length: FLEET }, () => randomUUID());
    await t.cp.database.prisma.device.createMany({ data: ids.map((id, i) => ({ id, name: `${prefix}-${i}`, ...data })) });
    return ids;
  }

  it('one flush of 5,000 devices\' telemetry stores every rollup and cursor in one pass (no statement over the parameter limit)', async () => {
    const ids = await insertDevices('flush', { status: 'offline', lastSeenAt: null });
    const outbox = t.cp.app.get(OutboxIngestService);
    const stats = t.cp.app.get(IngestStats);
    const failuresBefore = stats.flushFailures;
    const ts = Date.now();
    for (const id of ids) outbox.accept(id, { kind: 'telemetry', seq: 1, value: makeTelemetry({ seq: 1, ts }), receivedAt: ts });
    await outbox.flush();

    // a minute and an hour bucket per device: 10,000 rows x 17 parameters, far past PostgreSQL's 65,535
    const prisma = t.cp.database.prisma;
    expect(errors).toEqual([]);
    expect(stats.flushFailures - failuresBefore).toBe(0);
    expect(await prisma.telemetryRollup.count({ where: { deviceId: { in: ids } } })).toBe(2 * FLEET);
    expect(await prisma.deviceOutboxCursor.count({ where: { deviceId: { in: ids }, lastAckedSeq: 1n } })).toBe(FLEET);
    for (const id of [ids[0], ids[FLEET - 1]] as string[]) expect(outbox.ackedSeq(id)).toBe(1);
  }, 180_000);

  it('after a restart, the grace expiry marks 5,000 missing devices offline without crashing', async () => {
    const ids = await insertDevices('gone', { status: 'online', lastSeenAt: new Date(Date.now() - 60_000) });
    await t.restart();
    const prisma = t.cp.database.prisma;
    // an error on the way (logged, or a rejection nobody handles) ends the wait: it is the failure to report
    await pollUntil(async () => errors.length + unhandled.length > 0 || (await prisma.device.count({ where: { id: { in: ids }, status: 'offline' } })) === FLEET, {
      timeoutMs: 120_000,
      intervalMs: 500,
      what: 'every missing device offline',
    });
    expect(unhandled).toEqual([]);
    expect(errors).toEqual([]);
    const history = await prisma.deviceStatusChange.count({ where: { deviceId: { in: ids }, status: 'offline', previous: 'online', reason: 'restart-grace' } });
    expect(history).toBe(FLEET);
    expect((await api(t.cp, '/readyz')).status).toBe(200);
  }, 180_000);
});
