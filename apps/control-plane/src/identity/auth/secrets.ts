import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { hash as argon2Hash, verify as argon2Verify } from '@node-rs/argon2';

/** Prefixes make a leaked secret recognisable (and greppable) by kind. */
export const SECRET_PREFIX = {
  apiKey: 'flt_key_',
  session: 'flt_ses_',
  enrollment: 'flt_enr_',
  device: 'flt_dev_',
} as const;

export type SecretKind = keyof typeof SECRET_PREFIX;

/** 32 random bytes: high-entropy secrets, so a fast hash is enough to store them (passwords use argon2id). */
export function generateSecret(kind: SecretKind): string {
  return SECRET_PREFIX[kind] + randomBytes(32).toString('base64url');
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function secretMatches(secret: string, expectedHash: string): boolean {
  const actual = Buffer.from(hashSecret(secret), 'hex');
  const expected = Buffer.from(expectedHash, 'hex');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** The first characters of a secret, safe to show and to look a key up by. */
export function secretPrefix(secret: string): string {
  return secret.slice(0, 16);
}

/** A readable random password for the first admin. */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}

// @node-rs/argon2 exports Algorithm as a const enum, which isolatedModules cannot read.
const ARGON2ID = 2;

export function hashPassword(password: string): Promise<string> {
  return argon2Hash(password, { algorithm: ARGON2ID, memoryCost: 19_456, timeCost: 2, parallelism: 1 });
}

export async function verifyPassword(password: string, passwordHash: string): Promise<boolean> {
  try {
    return await argon2Verify(passwordHash, password);
  } catch {
    return false;
  }
}
