import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_SECTIONS, ConfigError, controlPlaneEnvSchema, loadConfig } from './config.js';

const problemsOf = (env: Record<string, string>): string[] => {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('loadConfig accepted the environment');
};

describe('loadConfig', () => {
  it('uses the documented defaults in every section', () => {
    const config = loadConfig({});
    expect(config.http.port).toBe(8080);
    expect(config.mqtt.port).toBe(1883);
    expect(config.dataDir.endsWith('.flotilla')).toBe(true);
    expect(config.database.url).toBeUndefined();
    expect(config.registry).toMatchObject({ reconnectGraceMs: 30_000, flushIntervalMs: 1000, flushEntries: 500, minuteRetentionMs: 7 * 24 * 3600 * 1000 });
    expect(config.gateway).toMatchObject({ deviceConcurrency: 10, queueLimit: 1000, timeoutMs: 30_000, defaultTier: 'small', cloud: undefined });
    expect(config.metrics).toEqual({ token: undefined });
    expect(config.scheduler).toMatchObject({ debounceMs: 200, intervalMs: 5000, planner: { memoryHeadroomFraction: 0.1 } });
    expect(config.alerts.thresholds).toMatchObject({ latencyMs: 3000, queueLength: 50, errorRatePercent: 10, acceleratorPercent: 95 });
    expect(config.alerts.scaling).toMatchObject({ scaleDownUtilizationPercent: 20, scaleDownRequestsPerSecond: 1 });
    expect(config.stream).toEqual({ heartbeatMs: 15_000, maxClients: 500, reauthenticateMs: 60_000 });
    expect(config.rateLimit['login-ip']).toEqual({ capacity: 30, refillPerSecond: 0.5 });
  });

  it('reads every section from the one environment it is given', () => {
    const config = loadConfig({
      FLOTILLA_INGEST_FLUSH_MS: '200',
      FLOTILLA_GATEWAY_CLOUD_URL: 'http://cloud.test/v1',
      FLOTILLA_METRICS_TOKEN: 'a-metrics-token-of-16+',
      FLOTILLA_SCHEDULER_INTERVAL_S: '0.5',
      FLOTILLA_ALERT_EVALUATE_EVERY_S: '0',
      FLOTILLA_EVENT_STREAM_HEARTBEAT_S: '0.3',
      FLOTILLA_RATE_LIMIT_ENROLL_PER_IP: '0',
      MY_CLOUD_KEY: 'sk-1',
    });
    expect(config.registry.flushIntervalMs).toBe(200);
    expect(config.gateway.cloud).toEqual({ baseUrl: 'http://cloud.test/v1', apiKey: 'none', model: undefined, timeoutMs: 30_000 });
    expect(config.gateway.readEnv('MY_CLOUD_KEY')).toBe('sk-1');
    expect(config.metrics.token).toBe('a-metrics-token-of-16+');
    expect(config.scheduler.intervalMs).toBe(500);
    expect(config.alerts.evaluateEverySeconds).toBe(0);
    expect(config.stream.heartbeatMs).toBe(300);
    expect(config.rateLimit['enroll-ip']).toBeNull();
  });

  it('lists every problem at once', () => {
    const problems = problemsOf({ FLOTILLA_HTTP_PORT: 'abc', FLOTILLA_MQTT_PORT: '70000', DATABASE_URL: 'mysql://x' });
    const text = problems.join('\n');
    expect(text).toContain('FLOTILLA_HTTP_PORT');
    expect(text).toContain('FLOTILLA_MQTT_PORT must be between 0 and 65535');
    expect(text).toContain('DATABASE_URL must be a postgres');
    expect(problems).toHaveLength(3);
  });

  it('lists the problems of different sections in one error', () => {
    const problems = problemsOf({
      FLOTILLA_GATEWAY_DEFAULT_TIER: 'huge',
      FLOTILLA_METRICS_TOKEN: 'short',
      FLOTILLA_RATE_LIMIT_LOGIN_PER_IP: '-1',
      FLOTILLA_INGEST_FLUSH_MS: '5',
    });
    expect(problems).toHaveLength(4);
    expect(problems[0]).toMatch(/^FLOTILLA_INGEST_FLUSH_MS: /);
    expect(problems).toContainEqual(expect.stringMatching(/^FLOTILLA_GATEWAY_DEFAULT_TIER: /));
    expect(problems).toContain('FLOTILLA_METRICS_TOKEN must be at least 16 characters');
    expect(problems).toContain('FLOTILLA_RATE_LIMIT_LOGIN_PER_IP must be a whole number of requests per minute (0 turns the limit off)');
    expect(() => loadConfig({ FLOTILLA_GATEWAY_DEFAULT_TIER: 'huge' })).toThrow(ConfigError);
  });

  it('needs the MQTT TLS certificate and key together, as existing files', () => {
    let error: unknown;
    try {
      loadConfig({ FLOTILLA_MQTT_TLS_CERT_FILE: '/nonexistent/cert.pem', FLOTILLA_HTTP_PORT: 'x' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect(problems).toContain('FLOTILLA_MQTT_TLS_CERT_FILE and FLOTILLA_MQTT_TLS_KEY_FILE must be set together');
    expect(problems).toContain('FLOTILLA_MQTT_TLS_CERT_FILE: no such file /nonexistent/cert.pem');
    expect(problems.some((p) => p.startsWith('FLOTILLA_HTTP_PORT'))).toBe(true);
    expect(loadConfig({}).mqtt.tls).toBeUndefined();
  });

  it('treats blank values as unset where the sections always did', () => {
    expect(loadConfig({ DATABASE_URL: '' }).database.url).toBeUndefined();
    const config = loadConfig({ FLOTILLA_ALERT_LATENCY_MS: ' ', FLOTILLA_RATE_LIMIT_LOGIN_PER_IP: '', FLOTILLA_METRICS_TOKEN: '' });
    expect(config.alerts.thresholds.latencyMs).toBe(3000);
    expect(config.rateLimit['login-ip']?.capacity).toBe(30);
    expect(config.metrics.token).toBeUndefined();
  });

  it('takes the PostgreSQL pool size from FLOTILLA_DATABASE_POOL_SIZE and refuses one that is not a count of connections', () => {
    expect(loadConfig({}).database.poolSize).toBe(10);
    expect(loadConfig({ FLOTILLA_DATABASE_POOL_SIZE: '40' }).database.poolSize).toBe(40);
    for (const bad of ['0', '2.5', 'many', '5000']) {
      expect(problemsOf({ FLOTILLA_DATABASE_POOL_SIZE: bad })).toEqual(['FLOTILLA_DATABASE_POOL_SIZE must be a whole number of connections between 1 and 1000']);
    }
  });

  it('composes sections whose variables do not overlap', () => {
    const keys = Object.values(CONFIG_SECTIONS).flatMap((section) => Object.keys(section.shape));
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.sort()).toEqual(Object.keys(controlPlaneEnvSchema.shape).sort());
  });
});

describe('docs/configuration.md', () => {
  const doc = readFileSync(new URL('../../../../docs/configuration.md', import.meta.url), 'utf8');
  // | `VARIABLE` | default | section | what |
  const rows = new Map(
    [...doc.matchAll(/^\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \|/gm)].map((m) => [m[1] as string, { defaultCell: (m[2] as string).trim(), section: (m[3] as string).trim() }]),
  );
  const sectionOf = new Map(Object.entries(CONFIG_SECTIONS).flatMap(([name, section]) => Object.keys(section.shape).map((key) => [key, name])));

  it('has one row per variable of the composed schema, in its section, and no other', () => {
    expect([...rows.keys()].sort()).toEqual(Object.keys(controlPlaneEnvSchema.shape).sort());
    for (const [key, row] of rows) expect(row.section, key).toBe(sectionOf.get(key));
  });

  it("gives each variable the schema's default", () => {
    const shape: Record<string, { parse(value: unknown): unknown }> = controlPlaneEnvSchema.shape;
    for (const [key, { defaultCell }] of rows) {
      const fallback = shape[key]?.parse(undefined);
      const literal = /^`([^`]*)`$/.exec(defaultCell)?.[1];
      if (literal === undefined) {
        expect(defaultCell, key).toMatch(/^\(unset/);
        expect(fallback, key).toBeUndefined();
      } else {
        expect(String(fallback), key).toBe(literal);
      }
    }
  });
});
