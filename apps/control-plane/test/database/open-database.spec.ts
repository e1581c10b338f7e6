import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import {
  DatabaseOpenError,
  openDatabase,
  redactUrl,
  resolveMigrationsDir,
} from '../../src/platform/database/index.js';
import { createIsolatedDatabase } from '../support/databases.js';

const repoMigrations = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'prisma', 'migrations');

describe('resolveMigrationsDir', () => {
  it('finds prisma/migrations above the sources and above the built dist/', () => {
    expect(resolveMigrationsDir()).toBe(repoMigrations);
    const fromDist = new URL('../../dist/platform/database/migrations-dir.js', import.meta.url).href;
    expect(resolveMigrationsDir(undefined, fromDist)).toBe(repoMigrations);
  });

  it('prefers the configured FLOTILLA_MIGRATIONS_DIR and says what to set when nothing is found', () => {
    expect(resolveMigrationsDir('/opt/flotilla/migrations')).toBe('/opt/flotilla/migrations');
    expect(() => resolveMigrationsDir(undefined, '/')).toThrow(/No prisma\/migrations folder found above \/\. Set FLOTILLA_MIGRATIONS_DIR/);
  });
});

describe('openDatabase', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cleanups.length = 0;
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-open-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  it('creates the embedded database in an empty <dataDir>/db and refuses a second opener while it is open', async () => {
    const dataDir = await tempDir();
    const logged: string[] = [];
    const db = await openDatabase({ dataDir, logger: { info: (m) => logged.push(m), warn: (m) => logged.push(m) } });
    cleanups.push(() => db.close());
    expect(db.backend).toBe('pglite');
    expect(db.location).toBe(join(dataDir, 'db'));
    expect(existsSync(join(dataDir, 'db', 'PG_VERSION'))).toBe(true);
    expect(logged.some((m) => /^Applied database migration 20261124000000_init in \d+ ms$/.test(m))).toBe(true);
    expect(logged).toContain(`Database: embedded PGlite in ${join(dataDir, 'db')}`);

    const second = await openDatabase({ dataDir }).catch((error: unknown) => error);
    expect(second).toBeInstanceOf(DatabaseOpenError);
    expect((second as Error).message).toMatch(/The embedded database .* is in use by this process/);

    await db.close();
    await db.close(); // idempotent
    const reopened = await openDatabase({ dataDir });
    expect(reopened.migrationReport.applied).toEqual([]);
    await reopened.close();
  });

  it('takes over a lock file left behind by a process that is gone', async () => {
    const isolated = await createIsolatedDatabase('pglite');
    cleanups.push(() => isolated.dispose());
    const dataDir = isolated.dataDir;
    // pid 2^22 + 1 is above Linux's pid_max default: no such process.
    await writeFile(join(dataDir, 'db.lock'), `${2 ** 22 + 1}\n`);
    const db = await openDatabase({ dataDir });
    await db.close();
    expect(existsSync(join(dataDir, 'db.lock'))).toBe(false);
  });

  it('names the server, never the password, when PostgreSQL is unreachable', async () => {
    const dataDir = await tempDir();
    const error = await openDatabase({ dataDir, databaseUrl: 'postgresql://flotilla:s3cret@127.0.0.1:1/flotilla' }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DatabaseOpenError);
    expect((error as Error).message).toMatch(/^Cannot connect to PostgreSQL at postgresql:\/\/flotilla:\*\*\*@127\.0\.0\.1:1\/flotilla: /);
    expect((error as Error).message).not.toContain('s3cret');
    expect(redactUrl('not a url')).toBe('<unparseable database URL>');
  });
});
