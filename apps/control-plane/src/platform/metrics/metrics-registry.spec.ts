import { describe, expect, it } from 'vitest';
import { parsePrometheusText, sampleValue } from '../../../test/observability/prometheus-text.js';
import { MetricsRegistry } from './metrics-registry.js';

describe('MetricsRegistry', () => {
  it('renders counters, gauges with collectors and cumulative histograms in the text format', async () => {
    const registry = new MetricsRegistry();
    const requests = registry.counter({ name: 'test_requests_total', help: 'Requests.\nTwo lines', labelNames: ['route', 'status'] });
    requests.inc({ route: '/a', status: 200 });
    requests.inc({ route: '/a', status: 200 }, 2);
    requests.inc({ route: 'we"ird\\path\n', status: 500 });
    let polled = 0;
    registry.gauge({ name: 'test_connections', help: 'Connections.', collect: (g) => g.set(undefined, ++polled * 10) });
    const latency = registry.histogram({ name: 'test_latency_seconds', help: 'Latency.', labelNames: ['route'], buckets: [0.1, 1] });
    latency.observe({ route: '/a' }, 0.05);
    latency.observe({ route: '/a' }, 0.5);
    latency.observe({ route: '/a' }, 5);

    const families = parsePrometheusText(await registry.render());
    expect(families.get('test_requests_total')).toMatchObject({ type: 'counter', help: 'Requests.\\nTwo lines' });
    expect(sampleValue(families, 'test_requests_total', { route: '/a', status: '200' })).toBe(3);
    expect(sampleValue(families, 'test_requests_total', { route: 'we"ird\\path\n', status: '500' })).toBe(1);
    expect(sampleValue(families, 'test_connections')).toBe(10);
    expect(sampleValue(families, 'test_latency_seconds_bucket', { route: '/a', le: '0.1' })).toBe(1);
    expect(sampleValue(families, 'test_latency_seconds_bucket', { route: '/a', le: '1' })).toBe(2);
    expect(sampleValue(families, 'test_latency_seconds_bucket', { route: '/a', le: '+Inf' })).toBe(3);
    expect(sampleValue(families, 'test_latency_seconds_sum', { route: '/a' })).toBeCloseTo(5.55);
    expect(sampleValue(families, 'test_latency_seconds_count', { route: '/a' })).toBe(3);
    // Collectors run on every render.
    expect(sampleValue(parsePrometheusText(await registry.render()), 'test_connections')).toBe(20);
  });

  it('returns the same metric when registered twice alike, and refuses conflicts, bad names and unknown labels', () => {
    const registry = new MetricsRegistry();
    const a = registry.counter({ name: 'x_total', help: 'x', labelNames: ['a'] });
    expect(registry.counter({ name: 'x_total', help: 'x', labelNames: ['a'] })).toBe(a);
    expect(() => registry.gauge({ name: 'x_total', help: 'x', labelNames: ['a'] })).toThrow(/already registered/);
    expect(() => registry.counter({ name: 'x_total', help: 'x', labelNames: ['b'] })).toThrow(/already registered/);
    expect(() => registry.counter({ name: 'bad-name', help: 'x' })).toThrow(/invalid metric name/);
    expect(() => registry.histogram({ name: 'h', help: 'x', labelNames: ['le'] })).toThrow(/invalid label/);
    expect(() => a.inc({ b: 1 } as never)).toThrow(/label "b" is not included/);
    expect(() => a.inc({ a: 1 }, -1)).toThrow(/not possible to decrease/);
    expect(() => registry.histogram({ name: 'h2', help: 'x', buckets: [1, 0.5] })).toThrow(/ascend/);
  });

  it('keeps rendering when a collector fails, and reports it', async () => {
    const registry = new MetricsRegistry();
    registry.gauge({ name: 'broken', help: 'x', collect: () => Promise.reject(new Error('db down')) });
    registry.counter({ name: 'ok_total', help: 'x' }).inc();
    const failures: string[] = [];
    const families = parsePrometheusText(await registry.render((name) => failures.push(name)));
    expect(failures).toEqual(['broken']);
    expect(sampleValue(families, 'ok_total')).toBe(1);
  });

  it('keeps each instance apart (no global registry) and starts unset gauges without a sample', async () => {
    const a = new MetricsRegistry();
    const b = new MetricsRegistry();
    a.counter({ name: 'same_total', help: 'x' }).inc();
    b.counter({ name: 'same_total', help: 'x' }).inc(undefined, 5);
    expect(sampleValue(parsePrometheusText(await a.render()), 'same_total')).toBe(1);
    expect(sampleValue(parsePrometheusText(await b.render()), 'same_total')).toBe(5);
    const health = a.gauge({ name: 'unset_gauge', help: 'x' });
    expect(parsePrometheusText(await a.render()).get('unset_gauge')?.samples).toEqual([]);
    health.set(undefined, 2);
    expect(sampleValue(parsePrometheusText(await a.render()), 'unset_gauge')).toBe(2);
  });

  it('removes the series that carry a label value from every metric with that label', async () => {
    const registry = new MetricsRegistry();
    const requests = registry.counter({ name: 'r_total', help: 'x', labelNames: ['model', 'device'] });
    const latency = registry.histogram({ name: 'l_seconds', help: 'x', labelNames: ['model', 'device'], buckets: [1] });
    const other = registry.counter({ name: 'o_total', help: 'x', labelNames: ['scope'] });
    for (const device of ['d1', 'd2']) {
      requests.inc({ model: 'm', device });
      latency.observe({ model: 'm', device }, 0.5);
    }
    other.inc({ scope: 'd1' });
    await registry.removeSeries({ device: 'd1' });
    const families = parsePrometheusText(await registry.render());
    expect(families.get('r_total')?.samples.map((s) => s.labels.device)).toEqual(['d2']);
    expect(new Set(families.get('l_seconds')?.samples.map((s) => s.labels.device))).toEqual(new Set(['d2']));
    expect(sampleValue(families, 'o_total', { scope: 'd1' })).toBe(1);
    // A removed series starts again from zero if it comes back.
    requests.inc({ model: 'm', device: 'd1' });
    expect(sampleValue(parsePrometheusText(await registry.render()), 'r_total', { device: 'd1' })).toBe(1);
  });
});
