import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from '@flotilla/protocol';

describe('imports protocol', () => {
  it('resolves', () => {
    expect(PROTOCOL_VERSION).toBe('v1');
  });
});
