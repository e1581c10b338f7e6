import { PGlite } from '@electric-sql/pglite';
import { PrismaPg } from '@prisma/adapter-pg';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { PrismaPGlite } from 'pglite-prisma-adapter';
import { PrismaClient } from '../../generated/prisma/client.js';
import { DatabaseOpenError } from './errors.js';
import { silentDatabaseLogger, type DatabaseLogger } from './logger.js';
import { resolveMigrationsDir } from './migrations-dir.js';
import { runMigrations, type MigrationReport } from './migrator.js';
import { acquireDirectoryLock, type DirectoryLock } from './pglite-lock.js';
import { pgClientExecutor, pgliteExecutor, type DatabaseBackend } from './sql-executor.js';

export interface OpenDatabaseOptions {
  /** the control plane's data directory; the embedded database lives in `<dataDir>/db` */
  dataDir: string;
  /** a postgres:// URL selects PostgreSQL instead of the embedded database */
  databaseUrl?: string | undefined;
  /** the config's FLOTILLA_MIGRATIONS_DIR; default: the nearest prisma/migrations (see resolveMigrationsDir) */
  migrationsDir?: string | undefined;
  logger?: DatabaseLogger | undefined;
  /** PostgreSQL connection pool size (default 10) */
  poolMax?: number | undefined;
}

export interface Database {
  readonly backend: DatabaseBackend;
  readonly prisma: PrismaClient;
  readonly migrationReport: MigrationReport;
  /** where the data is: the PGlite folder, or the PostgreSQL URL without its password */
  readonly location: string;
  /** resolves when the database answers a trivial query; for readiness checks */
  ping(): Promise<void>;
  /** disconnects Prisma and closes PGlite or the pool; safe to call twice */
  close(): Promise<void>;
}

/** Opens the configured database, applies pending migrations, and returns a Prisma client bound to it. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const logger = options.logger ?? silentDatabaseLogger;
  const migrationsDir = resolveMigrationsDir(options.migrationsDir);
  return options.databaseUrl
    ? openPostgres(options.databaseUrl, migrationsDir, logger, options.poolMax ?? 10)
    : openPglite(join(options.dataDir, 'db'), migrationsDir, logger);
}

async function openPglite(directory: string, migrationsDir: string, logger: DatabaseLogger): Promise<Database> {
  await mkdir(directory, { recursive: true });
  // PGlite is single-process: a second process on the same folder would corrupt it.
  const lock: DirectoryLock = await acquireDirectoryLock(directory);
  let pglite: PGlite | undefined;
  try {
    pglite = await PGlite.create(directory);
    const migrationReport = await runMigrations(pgliteExecutor(pglite), { migrationsDir, logger });
    const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
    const db = pglite;
    logger.info(`Database: embedded PGlite in ${directory}`);
    return makeDatabase('pglite', directory, prisma, migrationReport, async () => {
      await prisma.$disconnect();
      await db.close();
      await lock.release();
    });
  } catch (error) {
    await pglite?.close().catch(() => undefined);
    await lock.release();
    throw error;
  }
}

async function openPostgres(
  url: string,
  migrationsDir: string,
  logger: DatabaseLogger,
  poolMax: number,
): Promise<Database> {
  const location = redactUrl(url);
  const pool = new pg.Pool({ connectionString: url, max: poolMax });
  // An idle client's network error is emitted on the pool; without a listener it would crash the process.
  pool.on('error', (error) => logger.warn(`PostgreSQL pool: ${error.message}`));
  try {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (error) {
      throw new DatabaseOpenError(`Cannot connect to PostgreSQL at ${location}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    let migrationReport: MigrationReport;
    try {
      migrationReport = await runMigrations(pgClientExecutor(client), { migrationsDir, logger });
    } finally {
      client.release();
    }
    const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
    logger.info(`Database: PostgreSQL at ${location}`);
    return makeDatabase('postgres', location, prisma, migrationReport, async () => {
      await prisma.$disconnect();
      await pool.end();
    });
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }
}

function makeDatabase(
  backend: DatabaseBackend,
  location: string,
  prisma: PrismaClient,
  migrationReport: MigrationReport,
  closeOnce: () => Promise<void>,
): Database {
  let closing: Promise<void> | undefined;
  return {
    backend,
    prisma,
    migrationReport,
    location,
    async ping() {
      await prisma.$queryRawUnsafe('SELECT 1');
    },
    close() {
      closing ??= closeOnce();
      return closing;
    },
  };
}

/** The URL without its password, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '<unparseable database URL>';
  }
}
