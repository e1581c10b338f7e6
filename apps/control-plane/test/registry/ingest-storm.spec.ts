import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { encode, topics } from '@flotilla/protocol';
import { makeHardware, makeHello, makeModelState, makeModelStatus, makeStatus } from '@flotilla/protocol/testing';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { DeviceQueue } from '../../src/devices/ingest/device-queue.js';
import { DeviceWriteBatcher } from '../../src/devices/ingest/device-writes.js';
import { IngestStats } from '../../src/devices/ingest/ingest-stats.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';

/** Issue 11, causes 2 and 3: device writes (hello, status, model state) under a busy pool and a connect storm. */
const STORM = 3000;

interface LogLine {
  level: number;
  msg: string;
  deviceId?: string;
  err?: { code?: string; message?: string };
}

describeBackends('device writes under load', (backend) => {
  let t: TestControlPlane;
  const logs: LogLine[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const errorLines = () => logs.filter((line) => line.level >= 50).map((line) => `${line.msg}: ${line.err?.message?.slice(0, 200) ?? ''}`);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    t = await startTestControlPlane(backend, {}, pino({ level: 'warn' }, sink));
  }, 60_000);

  beforeEach(() => {
    logs.length = 0;
  });

  afterAll(async () => {
    await t?.dispose();
    process.off('unhandledRejection', onUnhandled);
  });

  async function insertDevices(prefix: string, count: number): Promise<string[]> {
    const ids = Array.from({ length: count }, () => randomUUID());
    await t.cp.database.prisma.device.createMany({ data: ids.map((id, i) => ({ id, name: `${prefix}-${i}`, status: 'offline' as const })) });
    return ids;
  }

  /** Takes every connection with a transaction that waits: PostgreSQL's default pool holds 10, PGlite has one. */
  function holdEveryConnection(): { held: Promise<void>; release(): Promise<void> } {
    const holders = backend === 'postgres' ? 10 : 1;
    let open = (): void => undefined;
    const released = new Promise<void>((resolve) => (open = resolve));
    const started: Promise<void>[] = [];
    const done: Promise<void>[] = [];
    for (let i = 0; i < holders; i++) {
      let begun = (): void => undefined;
      started.push(new Promise<void>((resolve) => (begun = resolve)));
      done.push(
        t.cp.database.prisma.$transaction(
          async (tx) => {
            await tx.$queryRaw`SELECT 1`;
            begun();
            await released;
          },
          { maxWait: 30_000, timeout: 60_000 },
        ),
      );
    }
    return {
      held: Promise.all(started).then(() => undefined),
      release: async () => {
        open();
        await Promise.all(done);
      },
    };
  }

  /** Through the embedded broker, as a device's PUBLISH reaches the ingest subscriptions. */
  const publish = (topic: string, payload: string) => t.cp.broker.publish(topic, payload, { qos: 0 });

  it('a transaction timeout that is retried, not dropped: hello, status and model state land after the pool frees up', async () => {
    const [helloId, statusId, modelId] = (await insertDevices('busy', 3)) as [string, string, string];
    const prisma = t.cp.database.prisma;
    const pool = holdEveryConnection();
    try {
      await pool.held;
      const hardware = makeHardware({ cpu: { model: 'held-pool CPU', cores: 64 } });
      await publish(topics.hello(helloId), encode('hello', makeHello({ sessionId: 'busy-hello', hardware })));
      await publish(topics.status(statusId), encode('status', makeStatus({ sessionId: 'busy-status' })));
      await publish(topics.modelState(modelId), encode('modelState', makeModelState({ models: [makeModelStatus('ready', { name: 'held-model' })] })));
      // the writes wait for a connection until Prisma gives up on starting their transaction (P2028)
      await pollUntil(() => logs.some((line) => line.err?.code === 'P2028' || JSON.stringify(line).includes('P2028')), {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: 'a write that could not start its transaction (P2028)',
      });
    } finally {
      await pool.release();
    }
    await pollUntil(
      async () => {
        const devices = await prisma.device.findMany({ where: { id: { in: [helloId, statusId] } } });
        const models = await prisma.modelState.count({ where: { deviceId: modelId, modelName: 'held-model', state: 'ready' } });
        const hello = devices.find((d) => d.id === helloId);
        const status = devices.find((d) => d.id === statusId);
        return (
          hello?.status === 'online' &&
          hello.sessionId === 'busy-hello' &&
          (hello.hardware as { cpu?: { model?: string } }).cpu?.model === 'held-pool CPU' &&
          status?.status === 'online' &&
          status.sessionId === 'busy-status' &&
          models === 1
        );
      },
      { timeoutMs: 60_000, intervalMs: 200, what: 'hello, status and model state stored after the pool freed up' },
    );
    await t.cp.app.get(DeviceQueue).idle();
    expect(unhandled).toEqual([]);
  }, 120_000);

  it('writes still failing after their retries are kept, logged once with the device id, and stored once the database is back', async () => {
    const [id] = (await insertDevices('kept', 1)) as [string];
    const lines: LogLine[] = [];
    const own = pino(
      { level: 'warn' },
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as LogLine);
          done();
        },
      }),
    );
    const stats = new IngestStats();
    // one try per round and a short pause between rounds, so the writes outlast their retries while the pool is held
    const writes = new DeviceWriteBatcher(t.cp.database, own, { ...t.cp.config.registry, deviceWriteAttempts: 1, deviceWriteDeferMs: 100 }, stats);
    const pool = holdEveryConnection();
    let written: Promise<unknown> | undefined;
    try {
      await pool.held;
      written = writes.status(id, { next: 'online', reason: 'startup', sessionId: 'kept-1', lastSeenAt: new Date() });
      await pollUntil(() => stats.deviceWritesDeferred >= 2, { timeoutMs: 30_000, intervalMs: 100, what: 'the write kept through two rounds' });
    } finally {
      await pool.release();
    }
    expect(await written).toMatchObject({ applied: true, status: 'online', sessionId: 'kept-1' });
    await writes.onModuleDestroy();
    const kept = lines.filter((line) => line.level >= 50);
    expect(kept.map((line) => ({ msg: line.msg, deviceId: line.deviceId }))).toEqual([
      { msg: 'device write not stored yet (database busy or away): kept, retried later', deviceId: id },
    ]);
    expect((await t.cp.database.prisma.device.findUniqueOrThrow({ where: { id } })).status).toBe('online');
  }, 60_000);

  it('writes of one device in one batch apply in order: one transaction, the last values stored, every status change in the history', async () => {
    const [id] = (await insertDevices('order', 1)) as [string];
    const writes = t.cp.app.get(DeviceWriteBatcher);
    const stats = t.cp.app.get(IngestStats);
    const batchesBefore = stats.deviceWriteBatches;
    const order: string[] = [];
    const submitted = [
      writes.status(id, { next: 'online', reason: 'startup', sessionId: 's1', lastSeenAt: new Date(1_000) }),
      writes.status(id, { next: 'offline', reason: 'shutdown', guard: (row) => row.sessionId === 's1' }),
      // judged against the row as the writes before it left it: the session is s1, not s0
      writes.status(id, { next: 'draining', reason: 'drain', guard: (row) => row.sessionId === 's0' }),
      writes.status(id, { next: 'online', reason: 'startup', sessionId: 's2', lastSeenAt: new Date(2_000) }),
    ].map((write, i) => write.then((outcome) => (order.push(String(i)), outcome)));
    const outcomes = await Promise.all(submitted);
    expect(order).toEqual(['0', '1', '2', '3']);
    expect(outcomes.map((o) => o && { applied: o.applied, previous: o.previous, status: o.status, sessionId: o.sessionId })).toEqual([
      { applied: true, previous: 'offline', status: 'online', sessionId: 's1' },
      { applied: true, previous: 'online', status: 'offline', sessionId: 's1' },
      { applied: false, previous: 'offline', status: 'offline', sessionId: 's1' },
      { applied: true, previous: 'offline', status: 'online', sessionId: 's2' },
    ]);
    expect(stats.deviceWriteBatches - batchesBefore).toBe(1);
    const prisma = t.cp.database.prisma;
    const row = await prisma.device.findUniqueOrThrow({ where: { id } });
    expect({ status: row.status, sessionId: row.sessionId, lastSeenAt: row.lastSeenAt?.getTime() }).toEqual({ status: 'online', sessionId: 's2', lastSeenAt: 2_000 });
    // one transaction: the rows share their time, so compared as a set (the outcomes above show the order)
    const history = await prisma.deviceStatusChange.findMany({ where: { deviceId: id } });
    expect(history.map((h) => `${h.previous}->${h.status} ${h.reason}`).sort()).toEqual(['offline->online startup', 'offline->online startup', 'online->offline shutdown']);
  });

  it('a hello below the stored outbox cursor resets it and records the reset (the path that still waits for flushes)', async () => {
    const [id] = (await insertDevices('reset', 1)) as [string];
    const prisma = t.cp.database.prisma;
    await prisma.deviceOutboxCursor.create({ data: { deviceId: id, lastAckedSeq: 7n } });
    await publish(topics.hello(id), encode('hello', makeHello({ sessionId: 'reset-1', outbox: { lastSeq: 2 } })));
    await pollUntil(async () => (await prisma.deviceOutboxCursor.findUnique({ where: { deviceId: id } }))?.lastAckedSeq === 2n, {
      timeoutMs: 20_000,
      what: 'the cursor moved back to the agent\'s lastSeq',
    });
    expect(await prisma.deviceEvent.count({ where: { deviceId: id, code: 'OUTBOX_RESET' } })).toBe(1);
    expect((await prisma.device.findUniqueOrThrow({ where: { id } })).status).toBe('online');
  });

  it(`a hello storm: ${STORM} devices' hello, status and model state through the broker all land, with no error`, async () => {
    const ids = await insertDevices('storm', STORM);
    const prisma = t.cp.database.prisma;
    const started = Date.now();
    const sent: Promise<void>[] = [];
    for (const [i, id] of ids.entries()) {
      const sessionId = `storm-${i}`;
      const hardware = makeHardware({ os: { platform: 'linux', release: '6.1.0', arch: 'x64', hostname: `storm-${i}` } });
      sent.push(publish(topics.hello(id), encode('hello', makeHello({ sessionId, hardware }))));
      sent.push(publish(topics.status(id), encode('status', makeStatus({ sessionId }))));
      sent.push(publish(topics.modelState(id), encode('modelState', makeModelState({ models: [makeModelStatus('ready', { name: `storm-model` })] }))));
    }
    await Promise.all(sent);
    // an error on the way ends the wait early: it is the failure to report
    await pollUntil(
      async () =>
        errorLines().length + unhandled.length > 0 ||
        ((await prisma.device.count({ where: { id: { in: ids }, status: 'online' } })) === STORM &&
          (await prisma.modelState.count({ where: { deviceId: { in: ids }, modelName: 'storm-model' } })) === STORM),
      { timeoutMs: 150_000, intervalMs: 500, what: `all ${STORM} devices online with their model state` },
    );
    const elapsed = Date.now() - started;
    await t.cp.app.get(DeviceQueue).idle();
    const stats = t.cp.app.get(IngestStats);
    console.log(
      `[${backend}] hello storm of ${STORM} devices: all online with model state after ${elapsed} ms; ` +
        `${stats.deviceWrites} device writes in ${stats.deviceWriteBatches} transactions`,
    );
    expect(errorLines()).toEqual([]);
    expect(unhandled).toEqual([]);
    const rows = await prisma.device.findMany({ where: { id: { in: ids } }, select: { id: true, sessionId: true, hardware: true, status: true } });
    const indexOf = new Map(ids.map((id, i) => [id, i]));
    const wrong = rows.filter((row) => {
      const index = indexOf.get(row.id);
      return row.status !== 'online' || row.sessionId !== `storm-${index}` || (row.hardware as { os?: { hostname?: string } }).os?.hostname !== `storm-${index}`;
    });
    expect(wrong.length).toBe(0);
    const history = await prisma.deviceStatusChange.count({ where: { deviceId: { in: ids }, status: 'online', previous: 'offline' } });
    expect(history).toBe(STORM);
  }, 240_000);
});
