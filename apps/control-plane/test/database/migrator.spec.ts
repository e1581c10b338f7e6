import { cp, mkdir, mkdtemp, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  MIGRATIONS_TABLE,
  MigrationError,
  openDatabase,
  pgClientExecutor,
  readMigrations,
  resolveMigrationsDir,
  runMigrations,
} from '../../src/platform/database/index.js';
import {
  createIsolatedDatabase,
  describeBackends,
  postgresNotRunReason,
  testBackends,
  type IsolatedDatabase,
} from '../support/databases.js';
import { withSqlExecutor } from '../support/sql.js';
import { dumpCatalog, type CatalogDump } from './catalog.js';

const migrationsDir = resolveMigrationsDir();

/** A private copy of the migrations folder that a test may edit. */
async function copyMigrations(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'flotilla-migrations-'));
  await cp(migrationsDir, dir, { recursive: true });
  return dir;
}

async function addMigration(dir: string, name: string, sql: string): Promise<void> {
  await mkdir(join(dir, name));
  await writeFile(join(dir, name, 'migration.sql'), sql);
}

describe('readMigrations', () => {
  it('reads the repository migrations in order, starting with init', async () => {
    const migrations = await readMigrations(migrationsDir);
    expect(migrations[0]?.name).toBe('20261124000000_init');
    expect(migrations.map((m) => m.name)).toEqual(migrations.map((m) => m.name).sort());
    for (const m of migrations) expect(m.checksum).toMatch(/^[a-f0-9]{64}$/);
  });

  it('treats CRLF and LF checkouts as the same migration', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-migrations-'));
    try {
      await addMigration(dir, '20260101000000_a', 'SELECT 1;\nSELECT 2;\n');
      await addMigration(dir, '20260101000001_b', 'SELECT 1;\r\nSELECT 2;\r\n');
      const [a, b] = await readMigrations(dir);
      expect(a?.checksum).toBe(b?.checksum);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('names the folder when the migrations are missing or misnamed', async () => {
    const missing = join(tmpdir(), 'flotilla-no-such-migrations');
    await expect(readMigrations(missing)).rejects.toThrow(`Cannot read the migrations folder ${missing}`);
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-migrations-'));
    try {
      await expect(readMigrations(dir)).rejects.toThrow(/No migrations found/);
      await addMigration(dir, 'init', 'SELECT 1;');
      await expect(readMigrations(dir)).rejects.toMatchObject({ reason: 'invalid-migration', migration: 'init' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describeBackends('migrator', (backend) => {
  let isolated: IsolatedDatabase;
  const scratch: string[] = [];

  beforeAll(async () => {
    isolated = await createIsolatedDatabase(backend);
  });
  afterEach(async () => {
    for (const dir of scratch.splice(0)) await rm(dir, { recursive: true, force: true });
  });
  afterAll(() => isolated?.dispose());

  it('applies every migration to an empty database, then nothing on the next start', async () => {
    const all = (await readMigrations(migrationsDir)).map((m) => m.name);
    const first = await openDatabase({ ...isolated.options, migrationsDir });
    expect(first.backend).toBe(backend);
    expect(first.migrationReport).toEqual({ applied: all, alreadyApplied: [] });
    await first.close();

    const second = await openDatabase({ ...isolated.options, migrationsDir });
    expect(second.migrationReport).toEqual({ applied: [], alreadyApplied: all });
    await second.ping();
    await second.close();

    const recorded = await withSqlExecutor(isolated, (sql) =>
      sql.query<{ name: string; checksum: string }>(`SELECT name, checksum FROM "${MIGRATIONS_TABLE}" ORDER BY name`),
    );
    expect(recorded).toEqual((await readMigrations(migrationsDir)).map(({ name, checksum }) => ({ name, checksum })));
  });

  it('applies a new migration on top, in its own transaction, and rolls back one that fails', async () => {
    const dir = await copyMigrations();
    scratch.push(dir);
    await addMigration(dir, '29990101000000_add_note', 'ALTER TABLE "devices" ADD COLUMN "note" TEXT;');
    await addMigration(
      dir,
      '29990101000001_broken',
      'CREATE TABLE "half_done" ("id" INTEGER);\nINSERT INTO "devices" ("id") VALUES (\'x\');',
    );
    const failure = await withSqlExecutor(isolated, (sql) => runMigrations(sql, { migrationsDir: dir })).catch(
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(MigrationError);
    expect(failure).toMatchObject({ reason: 'apply-failed', migration: '29990101000001_broken' });
    expect((failure as Error).message).toMatch(/^Database migration 29990101000001_broken failed and was rolled back: .*name/);

    await withSqlExecutor(isolated, async (sql) => {
      const tables = await sql.query<{ name: string }>(
        `SELECT table_name AS name FROM information_schema.tables WHERE table_name = 'half_done'`,
      );
      expect(tables).toEqual([]);
      const note = await sql.query(
        `SELECT 1 FROM information_schema.columns WHERE table_name = 'devices' AND column_name = 'note'`,
      );
      expect(note).toHaveLength(1);
      const names = await sql.query<{ name: string }>(`SELECT name FROM "${MIGRATIONS_TABLE}" ORDER BY name`);
      expect(names.map((r) => r.name)).toContain('29990101000000_add_note');
      expect(names.map((r) => r.name)).not.toContain('29990101000001_broken');
      // Undo the test migration so later tests see the repository schema.
      await sql.exec(`ALTER TABLE "devices" DROP COLUMN "note"; DELETE FROM "${MIGRATIONS_TABLE}" WHERE name LIKE '2999%';`);
    });
  });

  it('refuses to start, naming the migration, when an applied migration was edited', async () => {
    const dir = await copyMigrations();
    scratch.push(dir);
    await appendFile(join(dir, '20261124000000_init', 'migration.sql'), '\n-- edited after release\n');
    const error = await openDatabase({ ...isolated.options, migrationsDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect(error).toMatchObject({ reason: 'checksum-mismatch', migration: '20261124000000_init' });
    expect((error as Error).message).toMatch(
      /^Database migration 20261124000000_init was changed after it was applied \(checksum applied [0-9a-f]{12}, on disk [0-9a-f]{12}\)\. Applied migrations must never be edited/,
    );
    // The failed start released everything: the unchanged folder opens fine.
    const db = await openDatabase({ ...isolated.options, migrationsDir });
    expect(db.migrationReport.applied).toEqual([]);
    await db.close();
  });

  it('refuses to start when an applied migration is missing from disk', async () => {
    const dir = await copyMigrations();
    scratch.push(dir);
    await addMigration(dir, '29990101000002_later', 'CREATE TABLE "later_table" ("id" INTEGER);');
    await withSqlExecutor(isolated, (sql) => runMigrations(sql, { migrationsDir: dir }));
    await expect(openDatabase({ ...isolated.options, migrationsDir })).rejects.toMatchObject({
      name: 'MigrationError',
      reason: 'missing-on-disk',
      migration: '29990101000002_later',
      message: expect.stringContaining('Database migration 29990101000002_later is applied but missing from'),
    });
    await withSqlExecutor(isolated, (sql) =>
      sql.exec(`DROP TABLE "later_table"; DELETE FROM "${MIGRATIONS_TABLE}" WHERE name LIKE '2999%';`),
    );
  });
});

describe('migrated schema is the same on every backend', () => {
  const dumps = new Map<string, CatalogDump>();

  beforeAll(async () => {
    for (const backend of testBackends()) {
      const isolated = await createIsolatedDatabase(backend);
      try {
        await withSqlExecutor(isolated, async (sql) => {
          await runMigrations(sql, { migrationsDir });
          await sql.exec(`DROP TABLE "${MIGRATIONS_TABLE}"`);
          dumps.set(backend, await dumpCatalog(sql));
        });
      } finally {
        await isolated.dispose();
      }
    }
  });

  it('creates the tables, enums and foreign keys of the init migration', () => {
    const dump = dumps.get('pglite');
    expect(dump).toBeDefined();
    const tables = new Set(dump?.columns.map((c) => c.table));
    // Later migrations add tables; these come from init.
    expect([...tables]).toEqual(
      expect.arrayContaining([
        'alerts',
        'api_keys',
        'audit_events',
        'deployments',
        'device_credentials',
        'device_outbox_cursors',
        'devices',
        'enrollment_tokens',
        'inference_requests',
        'model_states',
        'models',
        'placements',
        'request_rollups',
        'sessions',
        'telemetry_rollups',
        'users',
      ]),
    );
    expect(dump?.enums.find((e) => e.name === 'device_status')?.labels.split(',')).toEqual(
      expect.arrayContaining(['online', 'offline', 'draining', 'revoked']),
    );
    expect(dump?.constraints.filter((c) => c.kind === 'f').map((c) => c.name)).toContain('placements_device_id_fkey');
  });

  // Without a server this comparison cannot run; say so instead of passing quietly.
  it.skipIf(postgresNotRunReason() !== undefined)(
    `PGlite and PostgreSQL dumps are identical${postgresNotRunReason() ? ` -- ${postgresNotRunReason()}` : ''}`,
    () => {
      expect(dumps.get('postgres')).toEqual(dumps.get('pglite'));
    },
  );
});

describe.skipIf(postgresNotRunReason() !== undefined)(
  `concurrent starts on PostgreSQL${postgresNotRunReason() ? ` -- ${postgresNotRunReason()}` : ''}`,
  () => {
    let isolated: IsolatedDatabase;
    beforeAll(async () => {
      isolated = await createIsolatedDatabase('postgres');
    });
    afterAll(() => isolated?.dispose());

    it('applies each migration exactly once when four replicas migrate at the same time', async () => {
      const clients = await Promise.all(
        Array.from({ length: 4 }, async () => {
          const client = new pg.Client({ connectionString: isolated.databaseUrl });
          await client.connect();
          return client;
        }),
      );
      try {
        const reports = await Promise.all(clients.map((c) => runMigrations(pgClientExecutor(c), { migrationsDir })));
        const all = (await readMigrations(migrationsDir)).map((m) => m.name);
        expect(reports.filter((r) => r.applied.length > 0)).toHaveLength(1);
        expect(reports.flatMap((r) => r.applied)).toEqual(all);
        for (const r of reports) expect([...r.applied, ...r.alreadyApplied].sort()).toEqual(all);
      } finally {
        await Promise.all(clients.map((c) => c.end()));
      }
    });
  },
);
