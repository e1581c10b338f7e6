import { Writable } from 'node:stream';
import { REDACTION_CENSOR } from '@flotilla/protocol';
import { logSecretSamples } from '@flotilla/protocol/testing';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';

function sink(): { lines: string[]; destination: Writable } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { lines, destination };
}

describe('createLogger', () => {
  it('puts the device id on every line and redacts secrets', async () => {
    const { lines, destination } = sink();
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

  it('redacts every path of the shared list', async () => {
    const { lines, destination } = sink();
    const logger = createLogger({ level: 'info', deviceId: 'dev-1', destination });
    const samples = logSecretSamples();
    for (const sample of samples) logger.info(sample.object, sample.path);
    await new Promise((done) => setImmediate(done));
    const leaked = samples.filter((s, i) => !lines[i]?.includes(REDACTION_CENSOR) || lines[i]?.includes(s.secret)).map((s) => s.path);
    expect(leaked).toEqual([]);
  });

  it('writes JSON with an ISO 8601 time when not on a terminal, readable lines on one when asked', async () => {
    const json = sink();
    createLogger({ level: 'info', deviceId: 'dev-1', destination: json.destination, prettyWhenTty: true, isTty: false }).info('plain');
    const pretty = sink();
    createLogger({ level: 'info', deviceId: 'dev-1', destination: pretty.destination, prettyWhenTty: true, isTty: true }).info({ token: 'abc' }, 'readable');
    await new Promise((done) => setImmediate(done));
    expect((JSON.parse(json.lines[0] ?? '{}') as { time?: unknown }).time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(pretty.lines.join('')).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d{4}\] INFO: readable\n\s+deviceId: "dev-1"\n\s+token: "\[redacted\]"\n$/);
  });
});
