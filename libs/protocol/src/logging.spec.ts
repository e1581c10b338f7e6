import { describe, expect, it } from 'vitest';
import { REDACTED_LOG_PATHS, prettyLogOptions } from './logging.js';
import { logSecretSamples } from './testing/log-secrets.js';

describe('logging', () => {
  it('redacts, in one list, every path either app redacted before', () => {
    const before = [
      // control plane
      ...['password', '*.password', 'adminPassword', 'apiKey', '*.apiKey', 'token', '*.token', 'secret', '*.secret', 'authorization'],
      ...['*.authorization', 'headers.authorization', 'req.headers.authorization', 'mqtt.password'],
      // device agent
      ...['*.*.password', '*.*.token', 'credentials', '*.credentials'],
    ];
    // A concrete path is covered by itself or by the wildcard of the same depth.
    const covered = (path: string) => {
      const keys = path.split('.');
      const field = keys[keys.length - 1] ?? '';
      return REDACTED_LOG_PATHS.includes(path) || REDACTED_LOG_PATHS.includes([...keys.slice(0, -1).map(() => '*'), field].join('.'));
    };
    expect(before.filter((path) => !covered(path))).toEqual([]);
    expect(new Set(REDACTED_LOG_PATHS).size).toBe(REDACTED_LOG_PATHS.length);
  });

  it('gives one sample per path with the secret at that path', () => {
    const samples = logSecretSamples();
    expect(samples.map((s) => s.path)).toEqual(REDACTED_LOG_PATHS);
    expect(samples.find((s) => s.path === '*.*.authorization')?.object).toEqual({ nested: { nested: { authorization: samples.find((s) => s.path === '*.*.authorization')?.secret } } });
  });

  it('chooses readable lines only on a terminal, and only when asked', () => {
    expect(prettyLogOptions({ prettyWhenTty: true, isTty: true })).toEqual({ translateTime: 'SYS:standard', ignore: 'pid,hostname', sync: true, colorize: true });
    expect(prettyLogOptions({ prettyWhenTty: true, isTty: false })).toBeUndefined();
    expect(prettyLogOptions({ prettyWhenTty: true, isTty: undefined })).toBeUndefined();
    expect(prettyLogOptions({ prettyWhenTty: false, isTty: true })).toBeUndefined();
    const destination = { write: () => true };
    expect(prettyLogOptions({ prettyWhenTty: true, isTty: true, destination })).toMatchObject({ colorize: false, destination });
  });
});
