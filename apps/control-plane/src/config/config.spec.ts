import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('uses the documented defaults', () => {
    const config = loadConfig({});
    expect(config.http.port).toBe(8080);
    expect(config.mqtt.port).toBe(1883);
    expect(config.dataDir.endsWith('.flotilla')).toBe(true);
    expect(config.database.url).toBeUndefined();
  });

  it('lists every problem at once', () => {
    let error: unknown;
    try {
      loadConfig({ FLOTILLA_HTTP_PORT: 'abc', FLOTILLA_MQTT_PORT: '70000', DATABASE_URL: 'mysql://x' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join('\n');
    expect(problems).toContain('FLOTILLA_HTTP_PORT');
    expect(problems).toContain('FLOTILLA_MQTT_PORT must be between 0 and 65535');
    expect(problems).toContain('DATABASE_URL must be a postgres');
    expect((error as ConfigError).problems).toHaveLength(3);
  });

  it('treats an empty DATABASE_URL as unset', () => {
    expect(loadConfig({ DATABASE_URL: '' }).database.url).toBeUndefined();
  });
});
