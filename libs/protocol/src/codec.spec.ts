import { describe, expect, it } from 'vitest';
import { fixtures } from './testing/factories.js';
import { decode, encode } from './codec.js';
import { TOPIC_KINDS } from './messages.js';

describe('[P-1.1] codec round trip', () => {
  it.each(TOPIC_KINDS)('[P-1.1] %s: encode -> decode returns the same message', (kind) => {
    const message = fixtures[kind]();
    const result = decode(kind, encode(kind, message));
    expect(result).toEqual({ ok: true, value: message });
  });
});
