import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { silentDatabaseLogger, type DatabaseLogger } from './logger.js';
import type { SqlExecutor } from './sql-executor.js';

/** Bookkeeping table; `_` keeps it apart from the product's tables (and from Prisma's own `_prisma_migrations`). */
export const MIGRATIONS_TABLE = '_flotilla_migrations';

/** pg_advisory_lock(classid, objid): 'FLOT' and 1 = schema migrations. Session-level, so released if we die. */
const LOCK_CLASS_ID = 0x464c4f54;
const LOCK_OBJECT_ID = 1;

/** Prisma's folder naming: a 14-digit UTC timestamp, `_`, a name. Sorting by name is applying in time order. */
const MIGRATION_NAME = /^\d{14}_[A-Za-z0-9_]+$/;

export interface Migration {
  /** folder name, e.g. `20261124000000_init` */
  name: string;
  sql: string;
  /** sha256 (hex) of migration.sql with line endings normalised to LF */
  checksum: string;
}

export interface MigrationReport {
  /** applied by this call, in order */
  applied: string[];
  /** found already applied */
  alreadyApplied: string[];
}

export type MigrationErrorReason =
  | 'migrations-dir-missing'
  | 'invalid-migration'
  | 'checksum-mismatch'
  | 'missing-on-disk'
  | 'apply-failed';

export class MigrationError extends Error {
  constructor(
    readonly reason: MigrationErrorReason,
    message: string,
    /** the migration at fault, when there is one */
    readonly migration?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

export interface RunMigrationsOptions {
  migrationsDir: string;
  logger?: DatabaseLogger;
}

export function migrationChecksum(sql: string): string {
  // A checkout with CRLF line endings is the same migration.
  return createHash('sha256').update(sql.replace(/\r\n/g, '\n')).digest('hex');
}

/** Reads `<dir>/<name>/migration.sql` for every migration folder, sorted by name. Files in `dir` are ignored. */
export async function readMigrations(migrationsDir: string): Promise<Migration[]> {
  let entries;
  try {
    entries = await readdir(migrationsDir, { withFileTypes: true });
  } catch (error) {
    throw new MigrationError(
      'migrations-dir-missing',
      `Cannot read the migrations folder ${migrationsDir}: ${(error as Error).message}. Set FLOTILLA_MIGRATIONS_DIR to the folder holding prisma/migrations.`,
      undefined,
      { cause: error },
    );
  }
  const names = entries
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
  const migrations: Migration[] = [];
  for (const name of names) {
    if (!MIGRATION_NAME.test(name)) {
      throw new MigrationError(
        'invalid-migration',
        `Migration folder ${join(migrationsDir, name)} is not named <14-digit timestamp>_<name>`,
        name,
      );
    }
    const file = join(migrationsDir, name, 'migration.sql');
    let sql: string;
    try {
      sql = await readFile(file, 'utf8');
    } catch (error) {
      throw new MigrationError('invalid-migration', `Migration ${name} has no readable ${file}`, name, {
        cause: error,
      });
    }
    migrations.push({ name, sql, checksum: migrationChecksum(sql) });
  }
  if (migrations.length === 0) {
    const exists = await stat(migrationsDir).then(
      (s) => s.isDirectory(),
      () => false,
    );
    throw new MigrationError(
      'migrations-dir-missing',
      `No migrations found in ${migrationsDir}${exists ? '' : ' (folder missing)'}. Set FLOTILLA_MIGRATIONS_DIR to the folder holding prisma/migrations.`,
    );
  }
  return migrations;
}

interface AppliedRow {
  name: string;
  checksum: string;
}

/**
 * Brings the database to the latest migration. Holds a PostgreSQL advisory lock for the whole run, so replicas that
 * start together apply each migration once (the others wait, then find it applied). Each migration runs in its own
 * transaction together with its bookkeeping row. Refuses to run when an applied migration was edited or is missing
 * from disk: the database and the code would disagree about the schema.
 */
export async function runMigrations(executor: SqlExecutor, options: RunMigrationsOptions): Promise<MigrationReport> {
  const logger = options.logger ?? silentDatabaseLogger;
  const migrations = await readMigrations(options.migrationsDir);

  const [attempt] = await executor.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS locked', [
    LOCK_CLASS_ID,
    LOCK_OBJECT_ID,
  ]);
  if (!attempt?.locked) {
    logger.info('Waiting for another control plane to finish database migrations');
    await executor.query('SELECT pg_advisory_lock($1, $2)', [LOCK_CLASS_ID, LOCK_OBJECT_ID]);
  }
  try {
    await executor.exec(
      `CREATE TABLE IF NOT EXISTS "${MIGRATIONS_TABLE}" (
        "name" TEXT NOT NULL PRIMARY KEY,
        "checksum" TEXT NOT NULL,
        "applied_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
        "duration_ms" INTEGER NOT NULL
      )`,
    );
    const appliedRows = await executor.query<AppliedRow>(
      `SELECT "name", "checksum" FROM "${MIGRATIONS_TABLE}" ORDER BY "name"`,
    );
    const onDisk = new Map(migrations.map((m) => [m.name, m]));
    for (const row of appliedRows) {
      const migration = onDisk.get(row.name);
      if (!migration) {
        throw new MigrationError(
          'missing-on-disk',
          `Database migration ${row.name} is applied but missing from ${options.migrationsDir}: ` +
            'this control plane is older than its database, or the migrations folder is incomplete. Refusing to start.',
          row.name,
        );
      }
      if (migration.checksum !== row.checksum) {
        throw new MigrationError(
          'checksum-mismatch',
          `Database migration ${row.name} was changed after it was applied ` +
            `(checksum applied ${row.checksum.slice(0, 12)}, on disk ${migration.checksum.slice(0, 12)}). ` +
            'Applied migrations must never be edited: restore the original file and add a new migration. Refusing to start.',
          row.name,
        );
      }
    }

    const applied = new Set(appliedRows.map((row) => row.name));
    const latestApplied = appliedRows.at(-1)?.name;
    const report: MigrationReport = { applied: [], alreadyApplied: [...applied] };
    for (const migration of migrations) {
      if (applied.has(migration.name)) continue;
      if (latestApplied && migration.name < latestApplied) {
        logger.warn(`Migration ${migration.name} is older than the applied ${latestApplied}; applying it anyway`);
      }
      const started = performance.now();
      await executor.exec('BEGIN');
      try {
        await executor.exec(migration.sql);
        await executor.query(`INSERT INTO "${MIGRATIONS_TABLE}" ("name", "checksum", "duration_ms") VALUES ($1, $2, $3)`, [
          migration.name,
          migration.checksum,
          Math.round(performance.now() - started),
        ]);
        await executor.exec('COMMIT');
      } catch (error) {
        await executor.exec('ROLLBACK').catch(() => undefined);
        throw new MigrationError(
          'apply-failed',
          `Database migration ${migration.name} failed and was rolled back: ${(error as Error).message}`,
          migration.name,
          { cause: error },
        );
      }
      report.applied.push(migration.name);
      logger.info(`Applied database migration ${migration.name} in ${Math.round(performance.now() - started)} ms`);
    }
    return report;
  } finally {
    await executor.query('SELECT pg_advisory_unlock($1, $2)', [LOCK_CLASS_ID, LOCK_OBJECT_ID]).catch(() => undefined);
  }
}
