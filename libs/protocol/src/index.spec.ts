import { describe, expect, it } from 'vitest';
import { PROTOCOL_VERSION } from './index.js';

describe('protocol', () => {
  it('has a version', () => {
    expect(PROTOCOL_VERSION).toBe('v1');
  });
});
