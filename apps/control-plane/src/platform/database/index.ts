export { openDatabase, redactUrl, type Database, type OpenDatabaseOptions } from './database.js';
export { DatabaseOpenError } from './errors.js';
export { silentDatabaseLogger, type DatabaseLogger } from './logger.js';
export { resolveMigrationsDir } from './migrations-dir.js';
export {
  MIGRATIONS_TABLE,
  MigrationError,
  migrationChecksum,
  readMigrations,
  runMigrations,
  type Migration,
  type MigrationErrorReason,
  type MigrationReport,
  type RunMigrationsOptions,
} from './migrator.js';
export { pgClientExecutor, pgliteExecutor, type DatabaseBackend, type SqlExecutor } from './sql-executor.js';
