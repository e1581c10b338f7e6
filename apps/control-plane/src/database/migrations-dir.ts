import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where the SQL migrations are: `FLOTILLA_MIGRATIONS_DIR` when set, otherwise the nearest `prisma/migrations` above
 * this file. Walking up works from the sources (vitest) and from the built `dist/` alike.
 */
export function resolveMigrationsDir(env: NodeJS.ProcessEnv = process.env, from: string = import.meta.url): string {
  const override = env['FLOTILLA_MIGRATIONS_DIR']?.trim();
  if (override) return resolve(override);
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
