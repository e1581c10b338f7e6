import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { generatePassword, generateSecret, hashPassword, hashSecret, secretPrefix } from '../../identity/auth/secrets.js';
import type { Database } from '../../platform/database/index.js';

export interface InitialCredentials {
  adminEmail: string;
  adminPassword: string;
  apiKey: string;
}

export const INITIAL_CREDENTIALS_FILE = 'initial-credentials.json';

/**
 * On first start with an empty database: one admin user and one gateway API key, written once to
 * `<dataDir>/initial-credentials.json` (mode 0600). Returns null when users already exist.
 */
export async function ensureInitialCredentials(
  db: Database,
  options: { dataDir: string; adminEmail: string; logger: Logger },
): Promise<InitialCredentials | null> {
  const credentials: InitialCredentials = {
    adminEmail: options.adminEmail.toLowerCase(),
    adminPassword: generatePassword(),
    apiKey: generateSecret('apiKey'),
  };
  const passwordHash = await hashPassword(credentials.adminPassword);
  const created = await db.prisma.$transaction(async (tx) => {
    // Replicas starting together: the unique e-mail makes only one of them win.
    if ((await tx.user.count()) > 0) return false;
    const admin = await tx.user.create({ data: { email: credentials.adminEmail, passwordHash, role: 'admin' } });
    await tx.apiKey.create({
      data: {
        name: 'default gateway key',
        prefix: secretPrefix(credentials.apiKey),
        keyHash: hashSecret(credentials.apiKey),
        scope: 'gateway',
        createdById: admin.id,
      },
    });
    await tx.auditEvent.create({ data: { actor: 'system', action: 'bootstrap.initial-credentials', target: `user:${admin.id}` } });
    return true;
  });
  if (!created) return null;
  const file = join(options.dataDir, INITIAL_CREDENTIALS_FILE);
  await writeFile(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
  options.logger.info({ file }, 'created the first admin user and gateway API key');
  return credentials;
}
