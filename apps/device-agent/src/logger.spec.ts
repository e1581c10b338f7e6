import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';

describe('createLogger', () => {
  it('puts the device id on every line and redacts secrets', async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logger = createLogger({ level: 'info', deviceId: 'dev-1', destination });
    logger.info({ mqtt: { username: 'dev-1', password: 'hunter2' }, token: 'abc' }, 'connecting');
    logger.child({ component: 'x' }).warn({ credentials: { password: 'p' } }, 'second');
    await new Promise((done) => setImmediate(done));
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      expect(parsed['deviceId']).toBe('dev-1');
      expect(line).not.toContain('hunter2');
      expect(line).not.toContain('"abc"');
    }
    expect(lines[0]).toContain('[redacted]');
  });
});
