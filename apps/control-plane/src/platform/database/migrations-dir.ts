import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where the SQL migrations are: `override` (the config's FLOTILLA_MIGRATIONS_DIR) when set, otherwise the nearest
 * `prisma/migrations` above this file. Walking up works from the sources (vitest) and from the built `dist/` alike.
 */
export function resolveMigrationsDir(override?: string, from: string = import.meta.url): string {
  if (override?.trim()) return resolve(override.trim());
  const start = from.startsWith('file:') ? dirname(fileURLToPath(from)) : resolve(from);
  for (let dir = start; ; dir = dirname(dir)) {
    const candidate = join(dir, 'prisma', 'migrations');
    if (existsSync(candidate) && statSync(candidate).isDirectory()) return candidate;
    if (dirname(dir) === dir) break;
  }
  throw new Error(
    `No prisma/migrations folder found above ${start}. Set FLOTILLA_MIGRATIONS_DIR to the folder holding the migrations.`,
  );
}
