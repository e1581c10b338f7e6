import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';
import { parseBindAddress, parseByteSize } from './units.js';

function writeYaml(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-config-'));
  const file = join(dir, 'agent.yaml');
  writeFileSync(file, text);
  return file;
}

function issuesOf(run: () => unknown): readonly string[] {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('loadConfig', () => {
  it('applies defaults', () => {
    const config = loadConfig({ env: {}, cwd: '/srv' });
    expect(config.dataDir).toBe('/srv/.flotilla/agent');
    expect(config.modelsDir).toBe('/srv/.flotilla/agent/models');
    expect(config.threads).toBe(1);
    expect(config.localApi.bind).toEqual({ host: '127.0.0.1', port: 8181 });
    expect(config.telemetryIntervalSeconds).toBe(5);
    expect(config.memoryBudget).toBeGreaterThan(0);
    expect(config.gpu).toBe(false);
    expect(config.mqtt.failoverAfterAttempts).toBe(3);
  });

  it('reads YAML and lets FLOTILLA_AGENT_* variables override it', () => {
    const file = writeYaml(
      ['dataDir: /var/lib/fa', 'diskQuota: 2GiB', 'memoryBudget: 512MiB', 'threads: 2', 'labels: { zone: a }', 'mqtt:', '  url: mqtt://cp:1883'].join('\n'),
    );
    const config = loadConfig({
      file,
      env: { FLOTILLA_AGENT_THREADS: '3', FLOTILLA_AGENT_LABELS: 'zone=b,role=kiosk', FLOTILLA_AGENT_LOCAL_API_BIND: '0.0.0.0:9000', FLOTILLA_AGENT_GPU: 'auto', FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: '2' },
    });
    expect(config.dataDir).toBe('/var/lib/fa');
    expect(config.diskQuota).toBe(2 * 1024 ** 3);
    expect(config.memoryBudget).toBe(512 * 1024 ** 2);
    expect(config.threads).toBe(3);
    expect(config.mqtt.keepaliveSeconds).toBe(2);
    expect(config.labels).toEqual({ zone: 'b', role: 'kiosk' });
    expect(config.localApi.bind).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(config.mqtt.url).toBe('mqtt://cp:1883');
    expect(config.gpu).toBe('auto');
  });

  it('lists every problem at once, naming the variable an override came from', () => {
    const file = writeYaml(['threads: 0', 'diskQuota: lots', 'bogus: 1', 'mqtt:', '  url: http://nope', '  tls:', '    caFile: /does/not/exist'].join('\n'));
    const issues = issuesOf(() =>
      loadConfig({ file, env: { FLOTILLA_AGENT_MAX_PARALLEL_REQUESTS: 'many', FLOTILLA_AGENT_TYPO: '1', FLOTILLA_AGENT_LOCAL_API_BIND: 'localhost' } }),
    );
    const text = issues.join('\n');
    expect(text).toMatch(/threads: .*>=1/);
    expect(text).toMatch(/diskQuota: not a size/);
    expect(text).toMatch(/bogus/);
    expect(text).toMatch(/mqtt\.url: must be an mqtt/);
    expect(text).toMatch(/mqtt\.tls\.caFile: file does not exist/);
    expect(text).toMatch(/maxParallelRequests \(from FLOTILLA_AGENT_MAX_PARALLEL_REQUESTS\)/);
    expect(text).toMatch(/FLOTILLA_AGENT_TYPO: unknown variable/);
    expect(text).toMatch(/localApi\.bind \(from FLOTILLA_AGENT_LOCAL_API_BIND\): not a host:port/);
    expect(issues.length).toBeGreaterThanOrEqual(8);
  });

  it('accepts the example config shipped with the install script', () => {
    const example = fileURLToPath(new URL('../../../../tools/deploy/agent/agent.example.yaml', import.meta.url));
    const config = loadConfig({ file: example, env: {} });
    expect(config).toMatchObject({ dataDir: '/var/lib/flotilla-agent', threads: 1, shutdownGraceSeconds: 20 });
  });

  it('streaming: coalescing defaults, overrides from YAML and FLOTILLA_AGENT_STREAM_*, validated', () => {
    expect(loadConfig({ env: {} }).streaming).toEqual({ flushIntervalMs: 20, maxTokensPerChunk: 8, testTokenGapMs: 0 });
    expect(loadConfig({ env: { FLOTILLA_AGENT_TEST_TOKEN_GAP_MS: '40' } }).streaming.testTokenGapMs).toBe(40);
    const file = writeYaml(['streaming:', '  flushIntervalMs: 50', '  maxTokensPerChunk: 4'].join('\n'));
    expect(loadConfig({ file, env: {} }).streaming).toEqual({ flushIntervalMs: 50, maxTokensPerChunk: 4, testTokenGapMs: 0 });
    expect(loadConfig({ file, env: { FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: '0', FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK: '16' } }).streaming).toEqual({
      flushIntervalMs: 0,
      maxTokensPerChunk: 16,
      testTokenGapMs: 0,
    });
    const text = issuesOf(() =>
      loadConfig({ env: { FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: 'soon', FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK: '0' } }),
    ).join('\n');
    expect(text).toMatch(/streaming\.flushIntervalMs \(from FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS\)/);
    expect(text).toMatch(/streaming\.maxTokensPerChunk \(from FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK\): .*>=1/);
    expect(issuesOf(() => loadConfig({ env: { FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: '2.5' } })).join('\n')).toMatch(/streaming\.flushIntervalMs/);
    expect(issuesOf(() => loadConfig({ file: writeYaml('streaming: { chunkBytes: 3 }'), env: {} })).join('\n')).toMatch(/chunkBytes/);
  });

  it('reports a YAML syntax error with the file name', () => {
    const file = writeYaml('threads: [1,\n');
    expect(issuesOf(() => loadConfig({ file, env: {} }))[0]).toContain(file);
  });
});

describe('units', () => {
  it('parses sizes and bind addresses', () => {
    expect(parseByteSize('1.5GiB')).toBe(Math.floor(1.5 * 1024 ** 3));
    expect(parseByteSize('10 MB')).toBe(10_000_000);
    expect(parseByteSize(42)).toBe(42);
    expect(parseByteSize('ten')).toBeUndefined();
    expect(parseBindAddress('[::1]:80')).toEqual({ host: '::1', port: 80 });
    expect(parseBindAddress('host:99999')).toBeUndefined();
  });
});
