import { PassThrough } from 'node:stream';
import { REDACTION_CENSOR } from '@flotilla/protocol';
import { logSecretSamples } from '@flotilla/protocol/testing';
import { describe, expect, it } from 'vitest';
import { createLogger } from './logger.js';

/** Every line the logger wrote, once it has written them. */
async function linesOf(out: PassThrough): Promise<string[]> {
  await new Promise((done) => setImmediate(done));
  return (out.read() as Buffer | null)?.toString('utf8').split(/(?<=\n)(?=\S)/) ?? [];
}

describe('createLogger', () => {
  it('redacts every path of the shared list', async () => {
    const out = new PassThrough();
    const logger = createLogger('info', { destination: out });
    const samples = logSecretSamples();
    for (const sample of samples) logger.info(sample.object, sample.path);
    const lines = await linesOf(out);
    expect(lines).toHaveLength(samples.length);
    const leaked = samples.filter((s, i) => !lines[i]?.includes(REDACTION_CENSOR) || lines[i]?.includes(s.secret)).map((s) => s.path);
    expect(leaked).toEqual([]);
  });

  it('writes JSON with an ISO 8601 time when not on a terminal, readable lines on one when asked', async () => {
    const json = new PassThrough();
    createLogger('info', { destination: json, prettyWhenTty: true, isTty: false }).info({ deviceId: 'dev-1' }, 'plain');
    const [line] = await linesOf(json);
    expect(JSON.parse(line ?? '{}')).toMatchObject({ name: 'control-plane', msg: 'plain', time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) });

    const pretty = new PassThrough();
    createLogger('info', { destination: pretty, prettyWhenTty: true, isTty: true }).warn({ apiKey: 'flt_key' }, 'readable');
    expect((await linesOf(pretty)).join('')).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} [+-]\d{4}\] WARN \(control-plane\): readable\n\s+apiKey: "\[redacted\]"\n$/);
  });
});
