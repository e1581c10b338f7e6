import { describe, expect, it } from 'vitest';
import { generateSecret, hashPassword, hashSecret, secretMatches, verifyPassword } from './secrets.js';

describe('secrets', () => {
  it('generates prefixed, unique secrets and matches them only against their own hash', () => {
    const a = generateSecret('apiKey');
    const b = generateSecret('apiKey');
    expect(a.startsWith('flt_key_')).toBe(true);
    expect(a).not.toBe(b);
    expect(secretMatches(a, hashSecret(a))).toBe(true);
    expect(secretMatches(b, hashSecret(a))).toBe(false);
    expect(hashSecret(a)).not.toContain(a);
  });

  it('hashes passwords with argon2id', async () => {
    const hash = await hashPassword('correct horse');
    expect(hash.startsWith('$argon2id$')).toBe(true);
    expect(await verifyPassword('correct horse', hash)).toBe(true);
    expect(await verifyPassword('wrong', hash)).toBe(false);
    expect(await verifyPassword('x', 'not-a-hash')).toBe(false);
  });
});
