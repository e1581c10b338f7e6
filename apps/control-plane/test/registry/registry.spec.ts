import {
  DeviceDetailSchema,
  DeviceEventsSchema,
  DeviceStatusHistorySchema,
  DeviceTelemetrySchema,
  RevokeDeviceResponseSchema,
  encode,
  topics,
} from '@flotilla/protocol';
import { makeEvent, makeModelState, makeModelStatus, makeStatus, makeTelemetry, makeUsage } from '@flotilla/protocol/testing';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { FleetEvents, type FleetEvent } from '../../src/platform/events/fleet-events.js';
import { IngestStats } from '../../src/devices/ingest/ingest-stats.js';
import { RetentionService } from '../../src/observability/retention/retention.service.js';
import { api } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { TestAgent, enrollDevice, frozenAgent, startRegistryControlPlane, type RegistryControlPlane } from './support.js';

const KEEPALIVE_S = 2;
/** [P-3.2] the liveness bound of the issue: 1.5 x keepalive + 2 s */
const OFFLINE_BOUND_MS = 1.5 * KEEPALIVE_S * 1000 + 2000;
const GRACE_S = 2;
const DAY_MS = 24 * 3600 * 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const minuteStart = (ms: number) => Math.floor(ms / 60_000) * 60_000;

describeBackends('device registry, liveness and ingest', (backend) => {
  let t: RegistryControlPlane;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    t = await startRegistryControlPlane(backend, {
      FLOTILLA_DEVICE_RECONNECT_GRACE_S: String(GRACE_S),
      FLOTILLA_INGEST_FLUSH_MS: '200',
    });
  });
  afterEach(async () => {
    await Promise.all(agents.splice(0).map((a) => a.close()));
  });
  afterAll(() => t?.dispose());

  const stats = () => t.cp.app.get(IngestStats);
  const detail = async (id: string) => {
    const res = await api(t.cp, `/api/v1/devices/${id}`, { token: t.adminToken });
    if (res.status !== 200) throw new Error(`detail ${res.status}: ${JSON.stringify(res.body)}`);
    return DeviceDetailSchema.parse(res.body);
  };
  const statusOf = async (id: string) => (await detail(id)).status;
  const waitStatus = (id: string, status: string, timeoutMs = 5000) =>
    pollUntil(async () => (await statusOf(id)) === status, { timeoutMs, intervalMs: 25, what: `${id} ${status}` });
  async function newAgent(name: string, labels: Record<string, string> = {}): Promise<TestAgent> {
    const agent = new TestAgent(await enrollDevice(t.cp, t.adminToken, name, labels));
    agents.push(agent);
    return agent;
  }
  async function onlineAgent(name: string, labels: Record<string, string> = {}): Promise<TestAgent> {
    const agent = await newAgent(name, labels);
    await agent.connect(t.cp.mqttPort, KEEPALIVE_S);
    await agent.sayHello();
    await waitStatus(agent.deviceId, 'online');
    return agent;
  }

  it('[P-3.1][P-3.5] hello brings a device online with its inventory; model states and telemetry show in its detail', async () => {
    const seen: FleetEvent[] = [];
    const off = t.cp.app.get(FleetEvents).onAny((e) => seen.push(e));
    try {
      const agent = await newAgent('kiosk-hello', { zone: 'a' });
      const id = agent.deviceId;
      // enrolled without a hardware summary: nothing reported yet
      expect(await detail(id)).toMatchObject({ status: 'offline', hardware: null });
      await agent.connect(t.cp.mqttPort, KEEPALIVE_S);
      await agent.sayHello({ agentVersion: '0.2.0', labels: { site: 'berlin', zone: 'from-agent' } });
      await agent.publish('modelState', makeModelState({ ts: Date.now() }), true);
      await agent.add('telemetry', (seq) => makeTelemetry({ seq, ts: Date.now() }));

      const d = await pollUntil(async () => {
        const r = await detail(id);
        return r.status === 'online' && r.modelStates.length === 3 && r.lastTelemetry ? r : false;
      });
      // control-plane labels win over the agent's local ones
      expect(d).toMatchObject({ agentVersion: '0.2.0', connected: true, labels: { zone: 'a', site: 'berlin' }, hardware: { cpu: { cores: 2 } } });
      expect(d.modelStates.map((m) => [m.model, m.state])).toEqual([
        ['big-q8', 'failed'],
        ['small-q4', 'ready'],
        ['tiny-q8', 'downloading'],
      ]);
      expect(d.modelStates.find((m) => m.model === 'tiny-q8')).toMatchObject({ receivedBytes: 85_000, totalBytes: 171_000 });
      expect(d.modelStates.find((m) => m.model === 'big-q8')).toMatchObject({ errorCode: 'INSUFFICIENT_MEMORY' });
      expect(d.lastTelemetry?.seq).toBe(1);
      expect(d.lastRollup?.samples).toBe(1);
      expect(seen).toContainEqual({ type: 'device.status', data: expect.objectContaining({ deviceId: id, status: 'online', previous: 'offline' }) });
      expect(seen).toContainEqual({ type: 'model-state.changed', data: expect.objectContaining({ deviceId: id, modelId: 'small-q4', state: 'ready' }) });
      expect(seen).toContainEqual({ type: 'device.telemetry', data: expect.objectContaining({ deviceId: id }) });

      // [P-3.5] a newer snapshot replaces the rows (absent models are gone); an older one is ignored
      await agent.publish('modelState', makeModelState({ ts: Date.now() + 1, models: [makeModelStatus('ready', { name: 'tiny-q8' })] }), true);
      await pollUntil(async () => (await detail(id)).modelStates.length === 1);
      const stale = stats().staleModelStates;
      await agent.publish('modelState', makeModelState({ ts: 1 }), true);
      await pollUntil(() => stats().staleModelStates > stale);
      expect((await detail(id)).modelStates).toEqual([expect.objectContaining({ model: 'tiny-q8', state: 'ready', loaded: true })]);
      expect(seen).toContainEqual({ type: 'model-state.changed', data: expect.objectContaining({ deviceId: id, modelId: 'big-q8', state: 'removed' }) });

      const history = await api(t.cp, `/api/v1/devices/${id}/status-history`, { token: t.adminToken });
      expect(DeviceStatusHistorySchema.parse(history.body).items[0]).toMatchObject({ status: 'online', previous: 'offline', reason: 'hello' });
    } finally {
      off();
    }
  });

  it('[P-3.2] a killed socket is offline within 1.5 x keepalive + 2 s; a late offline of an older session is ignored', async () => {
    const agent = await onlineAgent('kiosk-kill');
    const id = agent.deviceId;
    const killedAt = Date.now();
    agent.kill();
    await waitStatus(id, 'offline', OFFLINE_BOUND_MS + 1000);
    const elapsed = Date.now() - killedAt;
    expect(elapsed).toBeLessThanOrEqual(OFFLINE_BOUND_MS);
    const history = await api(t.cp, `/api/v1/devices/${id}/status-history`, { token: t.adminToken });
    expect(DeviceStatusHistorySchema.parse(history.body).items[0]).toMatchObject({ status: 'offline', reason: 'connection-lost' });

    // A new session; then an offline carrying the old session (what a late last will looks like) changes nothing.
    const oldSession = agent.sessionId;
    await agent.connect(t.cp.mqttPort, KEEPALIVE_S);
    await agent.sayHello();
    await waitStatus(id, 'online');
    const staleBefore = stats().staleStatuses;
    await agent.publish('status', makeStatus({ state: 'offline', reason: 'connection-lost', sessionId: oldSession, ts: Date.now() }), true);
    await pollUntil(() => stats().staleStatuses > staleBefore);
    expect(await statusOf(id)).toBe('online');
    // The current session's own offline (clean shutdown) counts.
    await agent.publish('status', makeStatus({ state: 'offline', reason: 'shutdown', sessionId: agent.sessionId, ts: Date.now() }), true);
    await waitStatus(id, 'offline');
  });

  it('[P-3.2] a frozen agent (no pings) is offline from the keepalive timeout within the bound', async () => {
    const creds = await enrollDevice(t.cp, t.adminToken, 'kiosk-frozen');
    const { socket, lastPacketAt } = await frozenAgent(t.cp.mqttPort, creds, KEEPALIVE_S);
    try {
      await waitStatus(creds.deviceId, 'online', 2500);
      await waitStatus(creds.deviceId, 'offline', OFFLINE_BOUND_MS + 1000);
      const elapsed = Date.now() - lastPacketAt;
      // it was the keepalive (1.5 x keepalive of silence), and within the bound
      expect(elapsed).toBeGreaterThanOrEqual(1.5 * KEEPALIVE_S * 1000 - 100);
      expect(elapsed).toBeLessThanOrEqual(OFFLINE_BOUND_MS);
    } finally {
      socket.destroy();
    }
  });

  it('[P-4.2][P-4.3] telemetry is stored in batches as rollups, acknowledged after the commit, and resent seqs are not stored twice', async () => {
    const agent = await onlineAgent('kiosk-telemetry');
    const id = agent.deviceId;
    const prisma = t.cp.database.prisma;
    // [P-4.2] an ack with the current value follows every hello
    await pollUntil(() => agent.acks.length > 0);
    expect(agent.acks[0]?.upToSeq).toBe(0);
    // [P-3.6] and names the hello it answers: the agent's clock sync
    expect(agent.acks[0]?.sessionId).toBe(agent.sessionId);

    // What the database holds at the moment each ack arrives: the commit must come first.
    const atAck: Promise<{ upToSeq: number; stored: number }>[] = [];
    agent.client?.on('message', (topic, payload) => {
      if (topic !== topics.outboxAck(id)) return;
      const upToSeq = (JSON.parse(payload.toString()) as { upToSeq: number }).upToSeq;
      atAck.push(
        prisma.deviceOutboxCursor
          .findUnique({ where: { deviceId: id } })
          .then((c) => ({ upToSeq, stored: Number(c?.lastAckedSeq ?? 0) })),
      );
    });

    const N = 20;
    const base = minuteStart(Date.now());
    const flushesBefore = stats().flushes;
    const sent: string[] = [];
    for (let i = 0; i < N; i++) {
      await agent.add('telemetry', (seq) => {
        const sample = makeTelemetry({ seq, ts: base + seq, cpu: { percent: seq } });
        sample.inference.queuedRequests = seq;
        sent.push(encode('telemetry', sample));
        return sample;
      });
    }
    await pollUntil(() => agent.ackedUpTo === N, { what: `ack of seq ${N}` });
    expect(stats().flushes - flushesBefore).toBeLessThan(N / 2); // batched, not one write per message
    const key = (bucketSeconds: number, start: number) => ({
      deviceId_bucketSeconds_bucketStart: { deviceId: id, bucketSeconds, bucketStart: new Date(start) },
    });
    const minute = await prisma.telemetryRollup.findUnique({ where: key(60, base) });
    expect(minute).toMatchObject({ samples: N, cpuMax: N, queueMax: N, requests: 4 * N, failures: 0 });
    expect(minute?.cpuAvg).toBeCloseTo((N + 1) / 2);
    expect((await prisma.telemetryRollup.findUnique({ where: key(3600, Math.floor(base / 3_600_000) * 3_600_000) }))?.samples).toBe(N);
    expect((await prisma.deviceOutboxCursor.findUnique({ where: { deviceId: id } }))?.lastAckedSeq).toBe(BigInt(N));
    for (const seen of await Promise.all(atAck)) expect(seen.stored).toBeGreaterThanOrEqual(seen.upToSeq);

    // The same seqs again (an agent that missed the ack): dropped, acknowledged again.
    const duplicatesBefore = stats().duplicates;
    const acksBefore = agent.acks.length;
    for (const payload of sent) await agent.publishRaw(topics.telemetry(id), payload);
    await pollUntil(() => stats().duplicates >= duplicatesBefore + N);
    await pollUntil(() => agent.acks.length > acksBefore);
    expect((await prisma.telemetryRollup.findUnique({ where: key(60, base) }))?.samples).toBe(N);

    // Events and usage records share the sequence.
    const requestId = `req-${id}`;
    await agent.add('event', (seq) => makeEvent({ seq, ts: Date.now() }));
    await agent.add('usage', (seq) => makeUsage({ seq, ts: Date.now(), requestId, origin: 'local' }));
    // a request the gateway dispatched is the gateway's to record: acknowledged, not written twice
    await agent.add('usage', (seq) => makeUsage({ seq, ts: Date.now(), requestId: `${requestId}-gw`, origin: 'control-plane' }));
    await pollUntil(() => agent.ackedUpTo === N + 3);
    expect(await prisma.inferenceRequest.count({ where: { requestId: `${requestId}-gw` } })).toBe(0);
    expect(await prisma.inferenceRequest.findUnique({ where: { requestId } })).toMatchObject({
      deviceId: id,
      model: 'tiny-q8',
      tokensIn: 42,
      tokensOut: 9,
      latencyMs: 180,
      outcome: 'success',
    });
    // A later flush into the same bucket merges exactly (averages re-weighted by sample counts).
    await agent.add('telemetry', (seq) => makeTelemetry({ seq, ts: base + 59_000, cpu: { percent: 100 } }));
    await pollUntil(() => agent.ackedUpTo === N + 4);
    const merged = await prisma.telemetryRollup.findUnique({ where: key(60, base) });
    expect(merged).toMatchObject({ samples: N + 1, cpuMax: 100 });
    expect(merged?.cpuAvg).toBeCloseTo((N * (N + 1)) / 2 / (N + 1) + 100 / (N + 1));

    const events = await api(t.cp, `/api/v1/devices/${id}/events`, { token: t.adminToken });
    expect(DeviceEventsSchema.parse(events.body).items).toEqual([expect.objectContaining({ seq: N + 1, code: 'MODEL_LOAD_FAILED' })]);

    const chart = await api(
      t.cp,
      `/api/v1/devices/${id}/telemetry?from=${base - 60_000}&to=${new Date(base + 60_000).toISOString()}`,
      { token: t.adminToken },
    );
    expect(chart.status).toBe(200);
    const points = DeviceTelemetrySchema.parse(chart.body);
    expect(points.bucketSeconds).toBe(60);
    expect(points.items).toEqual([expect.objectContaining({ bucketStart: new Date(base).toISOString(), samples: N + 1, cpuMax: 100 })]);
    const bad = await api<{ error: { code: string } }>(t.cp, `/api/v1/devices/${id}/telemetry?from=yesterday`, { token: t.adminToken });
    expect(bad.status).toBe(400);
  });

  it('deletes telemetry buckets once their retention has passed', async () => {
    const agent = await onlineAgent('kiosk-retention');
    const id = agent.deviceId;
    const prisma = t.cp.database.prisma;
    // Buffered while offline, sent late with its original ts [P-3.3]: the minute bucket (7 days) is already past
    // its retention, the hour bucket (90 days) is not.
    await agent.add('telemetry', (seq) => makeTelemetry({ seq, ts: Date.now() - 10 * DAY_MS }));
    await agent.add('telemetry', (seq) => makeTelemetry({ seq, ts: Date.now() }));
    await pollUntil(() => agent.ackedUpTo === 2);
    expect(await prisma.telemetryRollup.count({ where: { deviceId: id } })).toBe(4);
    const swept = await t.cp.app.get(RetentionService).sweep();
    expect(swept.telemetryRollups).toBeGreaterThanOrEqual(1);
    const left = await prisma.telemetryRollup.findMany({ where: { deviceId: id } });
    // the old minute bucket went; the old hour bucket and today's buckets stay
    expect(left.filter((r) => r.bucketSeconds === 3600)).toHaveLength(2);
    expect(left.filter((r) => r.bucketSeconds === 60).map((r) => r.bucketStart.getTime() > Date.now() - DAY_MS)).toEqual([true]);
  });

  it('relabels (operator, device.updated) and revokes (admin): the session is cut within 5 s, reconnection refused, audited', async () => {
    const agent = await onlineAgent('kiosk-revoke', { zone: 'a' });
    const id = agent.deviceId;
    const seen: FleetEvent[] = [];
    const off = t.cp.app.get(FleetEvents).onAny((e) => seen.push(e));
    try {
      const patched = await api(t.cp, `/api/v1/devices/${id}`, {
        method: 'PATCH',
        token: t.adminToken,
        body: { name: 'kiosk-renamed', labels: { zone: 'b', gpu: 'none' } },
      });
      expect(patched.status).toBe(200);
      expect(DeviceDetailSchema.parse(patched.body)).toMatchObject({ name: 'kiosk-renamed', labels: { zone: 'b', gpu: 'none' } });
      expect(seen).toContainEqual({ type: 'device.updated', data: { deviceId: id, fields: ['name', 'labels'] } });
      const invalid = await api<{ error: { code: string } }>(t.cp, `/api/v1/devices/${id}`, {
        method: 'PATCH',
        token: t.adminToken,
        body: { labels: { 'bad key!': 'x' } },
      });
      expect(invalid.status).toBe(400);
      expect((await api(t.cp, `/api/v1/devices/${id}/revoke`, { method: 'POST' })).status).toBe(401);
      expect((await api(t.cp, '/api/v1/devices/no-such-device', { token: t.adminToken })).status).toBe(404);

      const client = agent.client;
      if (!client) throw new Error('not connected');
      const closed = new Promise<number>((resolve) => client.once('close', () => resolve(Date.now())));
      const revokedAt = Date.now();
      const revoked = await api(t.cp, `/api/v1/devices/${id}/revoke`, { method: 'POST', token: t.adminToken });
      expect(revoked.status).toBe(200);
      const first = RevokeDeviceResponseSchema.parse(revoked.body);
      expect(first).toMatchObject({ status: 'revoked', disconnected: true });
      expect((await closed) - revokedAt).toBeLessThanOrEqual(5000);
      await expect(agent.connect(t.cp.mqttPort, KEEPALIVE_S)).rejects.toThrow(/bad username or password|not authorized/i);
      await sleep(700); // the will and the disconnect settle time pass: revoked stays revoked
      expect(await statusOf(id)).toBe('revoked');
      expect(seen).toContainEqual({ type: 'device.status', data: expect.objectContaining({ deviceId: id, status: 'revoked', previous: 'online' }) });

      const again = await api(t.cp, `/api/v1/devices/${id}/revoke`, { method: 'POST', token: t.adminToken });
      expect(again.status).toBe(200);
      // idempotent: the same revocation instant, no live session left to cut
      expect(RevokeDeviceResponseSchema.parse(again.body)).toEqual({ ...first, disconnected: false });
      const audit = await t.cp.database.prisma.auditEvent.findMany({ where: { target: `device:${id}` }, orderBy: { at: 'asc' } });
      expect(audit.map((a) => a.action)).toEqual(['device.enroll', 'device.update', 'device.revoke']);
      expect(JSON.stringify(audit)).not.toContain(agent.creds.password);
    } finally {
      off();
    }
  });

  it('[P-1.1] malformed payloads are logged with the device id, counted and dropped; the process keeps serving', async () => {
    const agent = await onlineAgent('kiosk-malformed');
    const id = agent.deviceId;
    const before = stats().snapshot();
    await agent.publishRaw(topics.telemetry(id), '{"v":1,"seq":');
    await agent.publishRaw(topics.event(id), Buffer.from([0xff, 0xfe, 0x00]));
    await agent.publishRaw(topics.hello(id), JSON.stringify({ v: 1, ts: 1 }));
    await agent.publishRaw(topics.status(id), JSON.stringify({ ...makeStatus({ sessionId: agent.sessionId }), state: 'offline', v: 2 }), true);
    await agent.publishRaw(topics.usage(id), JSON.stringify({ ...makeUsage({ seq: 1 }), promptTokens: -1 }));
    await agent.publishRaw(topics.commandAck(id), '[]');
    await agent.publishRaw(topics.modelState(id), 'null', true);
    await pollUntil(() => {
      const m = stats().malformed;
      return Object.values(m).reduce((a, b) => a + b, 0) - Object.values(before.malformed).reduce((a, b) => a + b, 0) === 7;
    });
    const after = stats().snapshot();
    const delta = (code: string) => (after.malformedByCode[code] ?? 0) - (before.malformedByCode[code] ?? 0);
    expect([delta('MALFORMED_JSON'), delta('INVALID_MESSAGE'), delta('UNSUPPORTED_VERSION')]).toEqual([2, 4, 1]);
    expect(after.malformed.telemetry - before.malformed.telemetry).toBe(1);
    const logged = t.logs.filter((l) => l.msg === 'malformed MQTT payload dropped' && l.deviceId === id);
    expect(logged.length).toBeGreaterThanOrEqual(1);
    expect(logged[0]).toMatchObject({ code: 'MALFORMED_JSON', topic: topics.telemetry(id) });

    // still up: nothing of the bad messages was applied, a valid entry is stored and acknowledged
    expect(await statusOf(id)).toBe('online');
    const seq = await agent.add('telemetry', (s) => makeTelemetry({ seq: s, ts: Date.now() }));
    await pollUntil(() => agent.ackedUpTo >= seq);
    expect((await api(t.cp, '/readyz')).status).toBe(200);
  });

  it('after a restart, devices that do not come back within the grace period are marked offline', async () => {
    const back = await onlineAgent('kiosk-returns');
    const gone = await onlineAgent('kiosk-gone');
    await t.restart();
    await back.close();
    await gone.close();
    await back.connect(t.cp.mqttPort, KEEPALIVE_S);
    await back.sayHello();
    // stored as online, shown as reconnecting (not back on this process) until the grace period ends, then offline
    expect((await t.cp.database.prisma.device.findUniqueOrThrow({ where: { id: gone.deviceId } })).status).toBe('online');
    expect(await statusOf(gone.deviceId)).toBe('reconnecting');
    await waitStatus(gone.deviceId, 'offline', GRACE_S * 1000 + 3000);
    expect(await statusOf(back.deviceId)).toBe('online');
    const history = await api(t.cp, `/api/v1/devices/${gone.deviceId}/status-history`, { token: t.adminToken });
    expect(DeviceStatusHistorySchema.parse(history.body).items[0]).toMatchObject({ status: 'offline', reason: 'restart-grace' });
  });

  it('restarting the control plane with connected agents loses no acknowledged outbox entry and duplicates none', async () => {
    const agent = await onlineAgent('kiosk-outbox');
    const id = agent.deviceId;
    const N = 60;
    const kindOf = (seq: number) => (seq % 10 === 0 ? 'usage' : seq % 5 === 0 ? 'event' : 'telemetry');
    const base = minuteStart(Date.now());
    let restarting: Promise<unknown> | undefined;
    let ackedBeforeRestart = 0;
    for (let i = 1; i <= N; i++) {
      const kind = kindOf(i);
      if (kind === 'usage') await agent.add('usage', (seq) => makeUsage({ seq, ts: Date.now(), requestId: `req-${id}-${seq}`, origin: 'local' }));
      else if (kind === 'event') await agent.add('event', (seq) => makeEvent({ seq, ts: Date.now(), level: 'info', code: 'AGENT_STARTED' }));
      else await agent.add('telemetry', (seq) => makeTelemetry({ seq, ts: base + seq }));
      if (i === N / 2) {
        await pollUntil(() => agent.ackedUpTo >= 10);
        ackedBeforeRestart = agent.ackedUpTo;
        restarting = t.restart(); // the agent keeps producing while the control plane goes down and comes back
      }
      await sleep(10);
    }
    await restarting;
    // [P-1.6] reconnect, hello, resend everything unacknowledged in seq order
    await agent.close();
    await agent.connect(t.cp.mqttPort, KEEPALIVE_S);
    await agent.sayHello();
    const resent = agent.outbox.size;
    await agent.resendUnacked();
    await pollUntil(() => agent.ackedUpTo === N && agent.outbox.size === 0, { timeoutMs: 10_000, what: 'all entries acknowledged' });

    expect(ackedBeforeRestart).toBeGreaterThanOrEqual(10);
    expect(resent).toBeGreaterThan(0); // entries produced while the control plane was down
    const prisma = t.cp.database.prisma;
    const expected = { telemetry: 0, event: 0, usage: 0 };
    for (let seq = 1; seq <= N; seq++) expected[kindOf(seq)] += 1;
    const samples = await prisma.telemetryRollup.aggregate({ where: { deviceId: id, bucketSeconds: 60 }, _sum: { samples: true } });
    expect({
      telemetry: samples._sum.samples,
      event: await prisma.deviceEvent.count({ where: { deviceId: id } }),
      usage: await prisma.inferenceRequest.count({ where: { deviceId: id } }),
    }).toEqual(expected);
    expect((await prisma.deviceOutboxCursor.findUnique({ where: { deviceId: id } }))?.lastAckedSeq).toBe(BigInt(N));
  });

  it('[P-4.3] an entry after a missing one waits for it: the late entry is stored, not skipped; a gap the agent vouches for is passed', async () => {
    const agent = await onlineAgent('kiosk-gap');
    const id = agent.deviceId;
    const base = minuteStart(Date.now());
    const sample = (seq: number, prevSeq: number) => makeTelemetry({ seq, prevSeq, ts: base + seq });
    await agent.publish('telemetry', sample(1, 0));
    await pollUntil(() => agent.ackedUpTo === 1, { what: 'ack of seq 1' });
    // seq 3 says the agent holds seq 2 (a resend will bring it): not stored, the cursor stays at 1
    await agent.publish('telemetry', sample(3, 2));
    await sleep(1000); // several flushes and acks
    expect(agent.ackedUpTo).toBe(1);
    // the late seq 2 is stored, then seq 3 with it
    await agent.publish('telemetry', sample(2, 1));
    await pollUntil(() => agent.ackedUpTo === 3, { what: 'ack of seq 3' });
    // seq 5 vouches that the agent holds nothing between 3 and 5 (it dropped seq 4): passed at once
    await agent.publish('telemetry', sample(5, 3));
    await pollUntil(() => agent.ackedUpTo === 5, { what: 'ack of seq 5' });
    const samples = await t.cp.database.prisma.telemetryRollup.aggregate({ where: { deviceId: id, bucketSeconds: 60 }, _sum: { samples: true } });
    expect(samples._sum.samples).toBe(4);
  });

  it('[P-4.3] an entry that cannot be decoded but names its seq is stored as an error event, so later entries are not held behind it', async () => {
    const agent = await onlineAgent('kiosk-poison');
    const id = agent.deviceId;
    const base = minuteStart(Date.now());
    await agent.publish('telemetry', makeTelemetry({ seq: 1, prevSeq: 0, ts: base + 1 }));
    await pollUntil(() => agent.ackedUpTo === 1, { what: 'ack of seq 1' });
    // seq 2 fails validation (as an entry from a newer agent might); seq 3 says the agent holds seq 2
    await agent.publishRaw(topics.telemetry(id), JSON.stringify({ ...makeTelemetry({ seq: 2, prevSeq: 1, ts: base + 2 }), memory: 'lots' }));
    await agent.publish('telemetry', makeTelemetry({ seq: 3, prevSeq: 2, ts: base + 3 }));
    await pollUntil(() => agent.ackedUpTo === 3, { what: 'ack of seq 3 past the rejected seq 2' });
    const samples = await t.cp.database.prisma.telemetryRollup.aggregate({ where: { deviceId: id, bucketSeconds: 60 }, _sum: { samples: true } });
    expect(samples._sum.samples).toBe(2);
    const rejected = await t.cp.database.prisma.deviceEvent.findMany({ where: { deviceId: id, code: 'OUTBOX_ENTRY_REJECTED' } });
    expect(rejected).toHaveLength(1);
    expect(rejected[0]?.message).toMatch(/^telemetry entry 2 rejected: INVALID_MESSAGE/);
  });
});
