import {
  AlertPageSchema,
  type AlertPage,
  AlertRulesSchema,
  ApiErrorBodySchema,
  FleetHealthSchema,
  MetricsTextSchema,
  RecommendationsSchema,
  StreamControlEventSchemas,
  StreamEventSchema,
  encode,
  topics,
} from '@flotilla/protocol';
import { makeTelemetry } from '@flotilla/protocol/testing';
import { connectAsync } from 'mqtt';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AlertsService } from '../../src/observability/alerts/alerts.service.js';
import { FleetEvents, type FleetEvent } from '../../src/platform/events/fleet-events.js';
import { api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { enrollDevice, loginAdmin, loginAs } from './helpers.js';
import { parsePrometheusText, sampleValue } from './prometheus-text.js';
import { openSse } from './sse-client.js';

const GB = 1e9;

describeBackends('observability', (backend) => {
  let t: TestControlPlane;
  let admin: string;
  const events: FleetEvent[] = [];

  beforeAll(async () => {
    // Alerts are evaluated on demand here (and after device status changes), heartbeats come fast.
    t = await startTestControlPlane(backend, { FLOTILLA_ALERT_EVALUATE_EVERY_S: '0', FLOTILLA_EVENT_STREAM_HEARTBEAT_S: '0.3', FLOTILLA_EVENT_STREAM_REAUTH_S: '0.3' });
    t.cp.app.get(FleetEvents).onAny((e) => events.push(e));
    admin = await loginAdmin(t);
  });
  afterAll(() => t?.dispose());

  const prisma = () => t.cp.database.prisma;
  // Every answer is checked against its REST schema: a drift between contract and handler fails here.
  const health = async () => FleetHealthSchema.parse((await api(t.cp, '/api/v1/fleet-health', { token: admin })).body);
  const setStatus = async (id: string, status: 'online' | 'offline', previous: string) => {
    await prisma().device.update({ where: { id }, data: { status, lastSeenAt: new Date() } });
    t.cp.app.get(FleetEvents).emit('device.status', { deviceId: id, status, previous, at: new Date().toISOString() });
  };

  it('computes fleet health from device status and open alerts, and announces each change', async () => {
    expect(await health()).toMatchObject({ status: 'healthy', reasons: [] });
    const now = new Date();
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      ids.push((await prisma().device.create({ data: { name: `h${i}`, status: 'online', lastSeenAt: now } })).id);
    }
    expect((await health()).status).toBe('healthy');

    await setStatus(ids[0] as string, 'offline', 'online');
    await pollUntil(() => events.find((e) => e.type === 'fleet.health' && e.data.status === 'degraded'), { what: 'fleet.health degraded' });
    expect((await health()).reasons.map((r) => r.rule)).toContain('devices-offline');

    await setStatus(ids[1] as string, 'offline', 'online');
    await pollUntil(() => events.find((e) => e.type === 'fleet.health' && e.data.status === 'unhealthy'), { what: 'fleet.health unhealthy' });
    expect((await health()).status).toBe('unhealthy');

    await setStatus(ids[0] as string, 'online', 'offline');
    await setStatus(ids[1] as string, 'online', 'offline');
    // The device-offline alerts the status changes opened resolve too, then the fleet is healthy again.
    await pollUntil(async () => (await health()).status === 'healthy', { what: 'healthy again' });

    const alert = await prisma().alert.create({ data: { rule: 'queue-high', severity: 'warning', subject: `device:${ids[2]}` } });
    expect(await health()).toMatchObject({ status: 'degraded', reasons: [{ rule: 'alerts-open' }] });
    await prisma().alert.update({ where: { id: alert.id }, data: { state: 'resolved', resolvedAt: new Date() } });
    expect((await health()).status).toBe('healthy');
    await prisma().device.deleteMany({ where: { id: { in: ids } } });
  });

  it('opens alerts from synthetic rollups and requests once, lists them page by page, and resolves them when the data recovers', async () => {
    const now = new Date();
    const minute = Math.floor(now.getTime() / 60_000) * 60_000;
    const hot = await prisma().device.create({
      data: {
        name: 'hot',
        status: 'online',
        lastSeenAt: now,
        hardware: { memory: { totalBytes: GB, freeBytes: 0 }, gpus: [{ name: 'gpu', vramBytes: GB }] },
      },
    });
    const gone = await prisma().device.create({ data: { name: 'gone', status: 'offline', lastSeenAt: new Date(now.getTime() - 300_000) } });
    const rollups = [1, 2, 3].map((k) => ({
      deviceId: hot.id,
      bucketSeconds: 60,
      bucketStart: new Date(minute - k * 60_000),
      samples: 12,
      queueAvg: 60,
      queueMax: 80,
      memoryAvgBytes: 0.97 * GB,
      vramAvgBytes: 0.5 * GB,
      requests: 40,
      failures: 8,
      expiresAt: new Date(now.getTime() + 86_400_000),
    }));
    await prisma().telemetryRollup.createMany({ data: rollups });
    await prisma().inferenceRequest.createMany({
      data: Array.from({ length: 12 }, (_, i) => ({
        requestId: `req-${i}`,
        requestedModel: 'tiny',
        model: 'tiny',
        deviceId: hot.id,
        latencyMs: 4000,
        outcome: i < 3 ? ('failed' as const) : ('success' as const),
        createdAt: new Date(now.getTime() - 60_000),
      })),
    });

    const alerts = t.cp.app.get(AlertsService);
    const seen = events.length;
    const first = await alerts.evaluate();
    const expected = [
      `device-offline device:${gone.id}`,
      `error-rate-high device:${hot.id}`,
      'error-rate-high fleet',
      'error-rate-high model:tiny',
      'latency-high model:tiny',
      `memory-high device:${hot.id}`,
      `queue-high device:${hot.id}`,
    ].sort();
    expect(first.firing.map((c) => `${c.rule} ${c.subject}`).sort()).toEqual(expected);
    const open = await prisma().alert.findMany({ where: { state: 'open' } });
    expect(open.map((a) => `${a.rule} ${a.subject}`).sort()).toEqual(expected);
    expect(open.find((a) => a.rule === 'latency-high')).toMatchObject({ severity: 'warning', value: 4000, threshold: 3000 });
    const opened = events.slice(seen).filter((e) => e.type === 'alert.changed' && e.data.state === 'open');
    expect(opened).toHaveLength(7);

    // Evaluating again changes nothing: no duplicate while open.
    const second = await alerts.evaluate();
    expect([second.opened, second.resolved]).toEqual([[], []]);
    expect(await prisma().alert.count({ where: { state: 'open' } })).toBe(7);
    expect((await health()).status).toBe('unhealthy');

    const ids: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: AlertPage } = { body: AlertPageSchema.parse((await api(t.cp, `/api/v1/alerts?state=open&limit=3${cursor ? `&cursor=${cursor}` : ''}`, { token: admin })).body) };
      expect(page.body.items.length).toBeLessThanOrEqual(3);
      ids.push(...page.body.items.map((a) => a.id));
      cursor = page.body.nextCursor;
    } while (cursor);
    expect(ids.sort()).toEqual(open.map((a) => a.id).sort());
    const invalid = await api(t.cp, '/api/v1/alerts?state=maybe', { token: admin });
    expect(invalid.status).toBe(400);
    expect(ApiErrorBodySchema.parse(invalid.body).error.code).toBe('INVALID_REQUEST');

    // The data recovers: normal load, no failures, the device back.
    await prisma().telemetryRollup.updateMany({ where: { deviceId: hot.id }, data: { queueAvg: 1, memoryAvgBytes: 0.4 * GB, failures: 0 } });
    await prisma().inferenceRequest.updateMany({ data: { latencyMs: 200, outcome: 'success' } });
    await prisma().device.update({ where: { id: gone.id }, data: { status: 'online', lastSeenAt: new Date() } });
    const third = await alerts.evaluate();
    expect(third.firing).toEqual([]);
    expect(third.resolved.sort()).toEqual(open.map((a) => a.id).sort());
    const resolved = { body: AlertPageSchema.parse((await api(t.cp, '/api/v1/alerts?state=resolved', { token: admin })).body) };
    const resolvedNow = resolved.body.items.filter((a) => ids.includes(a.id));
    expect(resolvedNow).toHaveLength(7);
    expect(resolvedNow.every((a) => a.resolvedAt !== null)).toBe(true);
    expect(events.slice(seen).filter((e) => e.type === 'alert.changed' && e.data.state === 'resolved')).toHaveLength(7);
    expect((await health()).status).toBe('healthy');

    const rules = { body: AlertRulesSchema.parse((await api(t.cp, '/api/v1/alerts/rules', { token: admin })).body) };
    expect(rules.body.rules).toContainEqual(expect.objectContaining({ rule: 'latency-high', threshold: 3000 }));
    const recommendations = { body: RecommendationsSchema.parse((await api(t.cp, '/api/v1/recommendations', { token: admin })).body) };
    expect(recommendations.body).toMatchObject({ windowSeconds: 900, recommendations: [] });

    await prisma().inferenceRequest.deleteMany({});
    await prisma().device.deleteMany({ where: { id: { in: [hot.id, gone.id] } } });
  });

  // Issue 11: a fleet going offline (or seen offline at start) opens thousands of alerts; they are written in chunks
  // of statements, not one INSERT each, and each is still announced once and resolved once.
  it('opens and resolves 2,500 device-offline alerts in one evaluation each, announcing every one', { timeout: 120_000 }, async () => {
    const alerts = t.cp.app.get(AlertsService);
    const lastSeenAt = new Date(Date.now() - 600_000);
    const names = Array.from({ length: 2500 }, (_, i) => `fleet-off-${i}`);
    await prisma().device.createMany({ data: names.map((name) => ({ name, status: 'offline' as const, lastSeenAt })) });
    const ids = (await prisma().device.findMany({ where: { name: { in: names } }, select: { id: true } })).map((d) => d.id);
    const seen = events.length;
    const first = await alerts.evaluate();
    expect(first.opened).toHaveLength(2500);
    const rows = await prisma().alert.findMany({ where: { state: 'open', rule: 'device-offline', subject: { in: ids.map((id) => `device:${id}`) } } });
    expect(new Set(rows.map((a) => a.subject)).size).toBe(2500);
    expect(new Set(first.opened)).toEqual(new Set(rows.map((a) => a.id)));
    const announced = events.slice(seen).filter((e) => e.type === 'alert.changed' && e.data.state === 'open');
    expect(announced).toHaveLength(2500);

    await prisma().device.updateMany({ where: { id: { in: ids } }, data: { status: 'online', lastSeenAt: new Date() } });
    const second = await alerts.evaluate();
    expect(new Set(second.resolved)).toEqual(new Set(first.opened));
    expect(await prisma().alert.count({ where: { state: 'open', rule: 'device-offline' } })).toBe(0);
    expect(events.slice(seen).filter((e) => e.type === 'alert.changed' && e.data.state === 'resolved')).toHaveLength(2500);
    await prisma().alert.deleteMany({ where: { subject: { in: ids.map((id) => `device:${id}`) } } });
    await prisma().device.deleteMany({ where: { id: { in: ids } } });
  });

  it('serves /metrics in the Prometheus text format: devices, broker traffic, ingest lag, HTTP by route and status', async () => {
    await api(t.cp, '/healthz');
    await api(t.cp, '/api/v1/devices');
    await api(t.cp, '/api/v1/no-such-route');
    const device = await enrollDevice(t.cp, admin, 'metrics-box');
    const client = await connectAsync(`mqtt://127.0.0.1:${t.cp.mqttPort}`, {
      clientId: device.deviceId,
      username: device.mqtt.username,
      password: device.mqtt.password,
      reconnectPeriod: 0,
    });
    try {
      const telemetry = encode('telemetry', makeTelemetry({ seq: 1, ts: Date.now() - 1500 }));
      await client.publishAsync(topics.telemetry(device.deviceId), telemetry, { qos: 1 });

      const scrape = async () => {
        const res = await fetch(`${t.cp.url}/metrics`);
        expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
        return parsePrometheusText(MetricsTextSchema.parse(await res.text()));
      };
      const families = await pollUntil(
        async () => {
          const f = await scrape();
          return (sampleValue(f, 'flotilla_ingest_lag_seconds_count', { kind: 'telemetry' }) ?? 0) >= 1 ? f : undefined;
        },
        { what: 'ingest lag sample' },
      );
      expect(sampleValue(families, 'flotilla_ingest_lag_seconds_sum', { kind: 'telemetry' })).toBeGreaterThanOrEqual(1.4);
      expect(sampleValue(families, 'flotilla_broker_messages_total', { direction: 'agent-to-cp', kind: 'telemetry' })).toBeGreaterThanOrEqual(1);
      expect(sampleValue(families, 'flotilla_broker_message_bytes_total', { direction: 'agent-to-cp', kind: 'telemetry' })).toBeGreaterThan(100);
      expect(sampleValue(families, 'flotilla_broker_connections')).toBeGreaterThanOrEqual(1);

      const byStatus = await prisma().device.groupBy({ by: ['status'], _count: { _all: true } });
      for (const status of ['online', 'offline', 'draining', 'revoked']) {
        expect(sampleValue(families, 'flotilla_devices', { status }), status).toBe(byStatus.find((r) => r.status === status)?._count._all ?? 0);
      }
      expect(families.get('flotilla_placements')?.type).toBe('gauge');
      expect(families.get('flotilla_deployment_replicas')?.type).toBe('gauge');
      expect(sampleValue(families, 'flotilla_http_requests_total', { method: 'GET', route: '/healthz', status: '200' })).toBeGreaterThanOrEqual(1);
      expect(sampleValue(families, 'flotilla_http_requests_total', { method: 'GET', route: '/api/v1/devices', status: '401' })).toBeGreaterThanOrEqual(1);
      expect(sampleValue(families, 'flotilla_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' })).toBeGreaterThanOrEqual(1);
      expect(sampleValue(families, 'flotilla_http_requests_total', { method: 'POST', route: '/api/v1/enroll', status: '201' })).toBeGreaterThanOrEqual(1);
      expect(sampleValue(families, 'flotilla_http_request_duration_seconds_count', { method: 'GET', route: '/healthz' })).toBeGreaterThanOrEqual(1);
      expect(families.get('flotilla_http_request_duration_seconds')?.type).toBe('histogram');
      // The gauge follows the last assessment, which background triggers (enrollment, status) may run at any time:
      // assess now, then the next scrape must show exactly that status.
      const health = { body: FleetHealthSchema.parse((await api(t.cp, '/api/v1/fleet-health', { token: admin })).body) };
      expect(sampleValue(await scrape(), 'flotilla_fleet_health')).toBe({ healthy: 0, degraded: 1, unhealthy: 2 }[health.body.status]);
      expect(sampleValue(families, 'flotilla_alert_evaluations_total', { result: 'ok' })).toBeGreaterThanOrEqual(3);
    } finally {
      await client.endAsync(true);
    }
  });

  it('streams fleet events over SSE with ids, heartbeats, type filters and Last-Event-ID replay', async () => {
    const refused = await fetch(`${t.cp.url}/api/v1/events/stream`);
    expect(refused.status).toBe(401);
    expect((await fetch(`${t.cp.url}/api/v1/events/stream?token=flt_ses_nope`)).status).toBe(401);

    const all = await openSse(`${t.cp.url}/api/v1/events/stream?token=${encodeURIComponent(admin)}`);
    const alertsOnly = await openSse(`${t.cp.url}/api/v1/events/stream?types=alert.changed`, { authorization: `Bearer ${admin}` });
    try {
      expect(all.status).toBe(200);
      expect(all.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      const ready = await all.next((f) => f.event === 'ready');
      await alertsOnly.next((f) => f.event === 'ready');
      expect(all.frames[0]).toEqual({ retry: 3000 });
      const before = StreamControlEventSchemas.ready.parse(JSON.parse(ready.data ?? '{}')).lastEventId;

      const device = await enrollDevice(t.cp, admin, 'sse-box');
      const enrolled = await all.next((f) => f.event === 'device.enrolled');
      expect(enrolled.id).toMatch(/^[0-9a-z]+\.\d+$/);
      expect(StreamEventSchema.parse(JSON.parse(enrolled.data ?? '{}'))).toMatchObject({ id: enrolled.id, type: 'device.enrolled', data: { deviceId: device.deviceId, name: 'sse-box' } });
      StreamControlEventSchemas.heartbeat.parse(JSON.parse((await all.next((f) => f.event === 'heartbeat')).data ?? '{}'));
      await alertsOnly.next((f) => f.event === 'heartbeat');
      expect(alertsOnly.frames.filter((f) => f.event === 'device.enrolled')).toEqual([]);

      // A client that reconnects with the id it last saw gets what it missed; an unknown id is told to resync.
      if (before) {
        const replay = await openSse(`${t.cp.url}/api/v1/events/stream`, { authorization: `Bearer ${admin}`, 'last-event-id': before });
        const missed = await replay.next((f) => f.event === 'device.enrolled');
        expect(missed.id).toBe(enrolled.id);
        replay.close();
      }
      const stale = await openSse(`${t.cp.url}/api/v1/events/stream`, { authorization: `Bearer ${admin}`, 'last-event-id': 'zzz.1' });
      StreamControlEventSchemas.resync.parse(JSON.parse((await stale.next((f) => f.event === 'resync')).data ?? '{}'));
      stale.close();
    } finally {
      all.close();
      alertsOnly.close();
    }
  });

  it('ends a stream whose session was logged out', async () => {
    const viewer = await loginAs(t.cp, 'viewer');
    const stream = await openSse(`${t.cp.url}/api/v1/events/stream?token=${encodeURIComponent(viewer)}`);
    await stream.next((f) => f.event === 'ready');
    expect((await api(t.cp, '/api/v1/auth/logout', { method: 'POST', token: viewer })).status).toBe(204);
    StreamControlEventSchemas.unauthorized.parse(JSON.parse((await stream.next((f) => f.event === 'unauthorized')).data ?? '{}'));
    await stream.ended;
  });

  it('ends open event streams when the control plane shuts down', async () => {
    const stream = await openSse(`${t.cp.url}/api/v1/events/stream`, { authorization: `Bearer ${admin}` });
    await stream.next((f) => f.event === 'ready');
    const started = Date.now();
    await t.cp.close();
    await stream.ended;
    // Nothing holds the server open: a stream left open would keep close() waiting for the client to go away.
    expect(Date.now() - started).toBeLessThan(2000);
  });
});
