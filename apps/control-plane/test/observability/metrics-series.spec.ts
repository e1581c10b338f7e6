import { readFileSync } from 'node:fs';
import { ErrorCode, encode, topics } from '@flotilla/protocol';
import { makeTelemetry } from '@flotilla/protocol/testing';
import { connectAsync } from 'mqtt';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MetricsRegistry } from '../../src/platform/metrics/metrics-registry.js';
import { GatewayAccounting } from '../../src/gateway/accounting.js';
import { modelBody } from '../scheduler/support.js';
import { adminLogin, api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { pollUntil } from '../support/poll.js';
import { startFailingDevice } from '../gateway/support.js';
import { enrollDevice, loginAdmin } from './helpers.js';
import { parsePrometheusText, sampleValue, type Family } from './prometheus-text.js';

/**
 * The committed list of what `/metrics` serves (metrics-series.json): every family's name, type, help, label names
 * and histogram buckets. Dashboards and alert rules outside this repository query these names; a change to the list
 * is a change to the contract and shows in review.
 */
interface SeriesSpec {
  name: string;
  type: 'counter' | 'gauge' | 'histogram';
  help: string;
  labelNames: string[];
  buckets?: number[];
}

const committed = JSON.parse(readFileSync(new URL('./metrics-series.json', import.meta.url), 'utf8')) as SeriesSpec[];
const byName = new Map(committed.map((s) => [s.name, s]));

/** Families that must have samples after the traffic below, so the label check is not vacuous. */
const MUST_HAVE_SAMPLES = [
  'flotilla_http_requests_total',
  'flotilla_http_request_duration_seconds',
  'flotilla_broker_messages_total',
  'flotilla_broker_message_bytes_total',
  'flotilla_ingest_lag_seconds',
  'flotilla_devices',
  'flotilla_model_states',
  'flotilla_process_event_loop_delay_seconds',
  'flotilla_rate_limited_total',
];

describeBackends('metrics series', (backend) => {
  let t: TestControlPlane;
  let admin: string;

  beforeAll(async () => {
    t = await startTestControlPlane(backend, { FLOTILLA_ALERT_EVALUATE_EVERY_S: '0', FLOTILLA_RATE_LIMIT_LOGIN_FAILURES_PER_PAIR: '1' });
    admin = await loginAdmin(t);
  });
  afterAll(() => t?.dispose());

  const scrape = async (): Promise<Map<string, Family>> => {
    const res = await fetch(`${t.cp.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    return parsePrometheusText(await res.text());
  };

  it('serves exactly the committed series: names, types, help, label names and buckets', async () => {
    await api(t.cp, '/healthz');
    await api(t.cp, '/api/v1/devices');
    await api(t.cp, '/api/v1/no-such-route');
    for (let i = 0; i < 2; i++) await api(t.cp, '/api/v1/auth/login', { body: { email: 'nobody@flotilla.test', password: 'wrong-password' } });
    const device = await enrollDevice(t.cp, admin, 'series-box');
    const client = await connectAsync(`mqtt://127.0.0.1:${t.cp.mqttPort}`, {
      clientId: device.deviceId,
      username: device.mqtt.username,
      password: device.mqtt.password,
      reconnectPeriod: 0,
    });
    let families: Map<string, Family>;
    try {
      await client.publishAsync(topics.telemetry(device.deviceId), encode('telemetry', makeTelemetry({ seq: 1, ts: Date.now() - 100 })), { qos: 1 });
      families = await pollUntil(
        async () => {
          const f = await scrape();
          return (sampleValue(f, 'flotilla_ingest_lag_seconds_count', { kind: 'telemetry' }) ?? 0) >= 1 ? f : undefined;
        },
        { what: 'an ingest lag sample', timeoutMs: 20_000 },
      );
    } finally {
      await client.endAsync(true);
    }

    expect([...families.keys()].sort()).toEqual(committed.map((s) => s.name).sort());
    for (const family of families.values()) {
      const spec = byName.get(family.name) as SeriesSpec;
      expect({ name: family.name, type: family.type, help: family.help }).toEqual({ name: spec.name, type: spec.type, help: spec.help });
      for (const sample of family.samples) {
        const { le, ...labels } = sample.labels;
        expect({ sample: sample.name, labels: Object.keys(labels).sort() }).toEqual({ sample: sample.name, labels: [...spec.labelNames].sort() });
        if (sample.name.endsWith('_bucket')) expect([...(spec.buckets ?? []).map(String), '+Inf'], sample.name).toContain(le);
        else expect(le, sample.name).toBeUndefined();
      }
      if (spec.type === 'histogram') {
        // Every series of a histogram has exactly the committed buckets, in order.
        const first = family.samples.find((s) => s.name.endsWith('_bucket'));
        if (first) {
          const { le: _le, ...labels } = first.labels;
          const les = family.samples.filter((s) => s.name.endsWith('_bucket') && sameLabels(s.labels, labels)).map((s) => s.labels.le);
          expect(les, family.name).toEqual([...(spec.buckets ?? []).map(String), '+Inf']);
        }
      }
    }
    for (const name of MUST_HAVE_SAMPLES) expect(families.get(name)?.samples.length ?? 0, name).toBeGreaterThan(0);

    // Label names of families without samples yet do not show in a scrape: the registry says them.
    const registry = t.cp.app.get(MetricsRegistry);
    for (const spec of committed) {
      const metric = registry.get(spec.name);
      expect(metric, spec.name).toBeDefined();
      expect({ name: spec.name, type: metric?.type, labelNames: [...(metric?.labelNames ?? [])] }).toEqual({ name: spec.name, type: spec.type, labelNames: spec.labelNames });
    }
  });

  it('removes every series of a revoked device and of a model deleted from the catalog', async () => {
    const { gatewayKey } = await adminLogin(t.cp, t.isolated.dataDir);
    const model = 'm-retired';
    expect((await api(t.cp, '/api/v1/models', { token: admin, body: modelBody(model) })).status).toBe(201);
    const { deviceId } = await enrollDevice(t.cp, admin, 'retired-box');
    // A device (broker messages only) that holds the model ready and fails every job: the gateway leases it, sends
    // the job over MQTT and records the request, which makes the per-model and per-device series.
    const device = await startFailingDevice(t.cp, deviceId, [model], { code: ErrorCode.GENERATION_FAILED, message: 'scripted failure', retryable: false });
    try {
      const ask = () =>
        fetch(`${t.cp.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${gatewayKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hi' }] }),
        });
      await pollUntil(
        async () => {
          await ask();
          return device.jobs.length > 0;
        },
        { what: 'a job sent to the scripted device', timeoutMs: 20_000 },
      );
      await t.cp.app.get(GatewayAccounting).flush();
      const labelled = (families: Map<string, Family>) =>
        [...families.values()].flatMap((f) => f.samples.filter((s) => s.labels.device === deviceId || s.labels.model === model).map((s) => s.name));
      const before = new Set(labelled(await scrape()));
      for (const name of [
        'flotilla_gateway_requests_total',
        'flotilla_gateway_request_duration_seconds_count',
        'flotilla_gateway_device_outstanding_requests',
        'flotilla_gateway_device_cooldown',
      ]) {
        expect(before, name).toContain(name);
      }

      expect((await api(t.cp, `/api/v1/devices/${deviceId}/revoke`, { token: admin, body: {} })).status).toBe(200);
      expect((await api(t.cp, `/api/v1/models/${model}`, { method: 'DELETE', token: admin })).status).toBe(200);
      // Removal follows the events asynchronously: the next scrapes must lose every such series.
      const after = await pollUntil(
        async () => {
          const left = labelled(await scrape());
          return left.length === 0 ? left : undefined;
        },
        { what: 'the series of the revoked device and the deleted model to go', timeoutMs: 10_000 },
      ).catch(async () => labelled(await scrape()));
      expect(after).toEqual([]);
    } finally {
      await device.stop();
    }
  });
});

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const { le: _le, ...rest } = a;
  return Object.keys(rest).length === Object.keys(b).length && Object.entries(b).every(([k, v]) => rest[k] === v);
}
