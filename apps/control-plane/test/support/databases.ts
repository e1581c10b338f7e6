import { PGlite } from '@electric-sql/pglite';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { describe } from 'vitest';
import { openDatabase, type Database, type OpenDatabaseOptions } from '../../src/platform/database/index.js';

/**
 * Test databases on every backend the control plane supports: embedded PGlite always, PostgreSQL when
 * FLOTILLA_TEST_DATABASE_URL names a server whose user may create databases. Each test database is isolated
 * (its own temporary folder, its own freshly created PostgreSQL database) and removed by `dispose()`.
 *
 *   describeBackends('devices', (backend) => {
 *     let db: TestDatabase;
 *     beforeAll(async () => { db = await openTestDatabase(backend); });
 *     afterAll(() => db.dispose());
 *     it('...', async () => { await db.database.prisma.device.count(); });
 *   });
 */
export type TestBackend = 'pglite' | 'postgres';

export const POSTGRES_TEST_URL_VARIABLE = 'FLOTILLA_TEST_DATABASE_URL';

export function postgresTestUrl(): string | undefined {
  const url = process.env[POSTGRES_TEST_URL_VARIABLE]?.trim();
  return url ? url : undefined;
}

/** Why the PostgreSQL suites do not run here, or undefined when they do. */
export function postgresNotRunReason(): string | undefined {
  return postgresTestUrl()
    ? undefined
    : `PostgreSQL suite not run: ${POSTGRES_TEST_URL_VARIABLE} is not set ` +
        `(e.g. ${POSTGRES_TEST_URL_VARIABLE}=postgresql://postgres@127.0.0.1:5432/postgres)`;
}

/** The backends tests can run on in this environment. */
export function testBackends(): TestBackend[] {
  return postgresTestUrl() ? ['pglite', 'postgres'] : ['pglite'];
}

let explained = false;

/**
 * `describe(title [backend])` once per backend. Without FLOTILLA_TEST_DATABASE_URL the PostgreSQL block is
 * registered as skipped, its title and a console line saying why, so a green run never hides that it did not run.
 */
export function describeBackends(title: string, body: (backend: TestBackend) => void): void {
  describe(`${title} [pglite]`, () => body('pglite'));
  const reason = postgresNotRunReason();
  if (reason === undefined) {
    describe(`${title} [postgres]`, () => body('postgres'));
    return;
  }
  // In CI nothing may be skipped: a missing service URL is a broken pipeline, not a reason to pass.
  if (process.env.CI === 'true' || process.env.CI === '1') {
    throw new Error(`${reason}; CI must run every suite (.ci/run sets it)`);
  }
  if (!explained) {
    explained = true;
    console.warn(reason);
  }
  describe.skip(`${title} [postgres] -- ${reason}`, () => body('postgres'));
}

/**
 * `describe(title [backend])` for one backend only (a scenario that matters on one database), with the same rules as
 * `describeBackends`: PostgreSQL without FLOTILLA_TEST_DATABASE_URL is a skipped block locally and an error in CI.
 */
export function describeBackend(backend: TestBackend, title: string, body: (backend: TestBackend) => void): void {
  const reason = backend === 'postgres' ? postgresNotRunReason() : undefined;
  if (reason === undefined) {
    describe(`${title} [${backend}]`, () => body(backend));
    return;
  }
  if (process.env.CI === 'true' || process.env.CI === '1') throw new Error(`${reason}; CI must run every suite (.ci/run sets it)`);
  console.warn(reason);
  describe.skip(`${title} [${backend}] -- ${reason}`, () => body(backend));
}

export interface IsolatedDatabase {
  backend: TestBackend;
  /** a fresh temporary data directory (PGlite puts its files in `<dataDir>/db`) */
  dataDir: string;
  /** the fresh PostgreSQL database's URL; undefined for PGlite */
  databaseUrl: string | undefined;
  /** what to pass to openDatabase (add migrationsDir/logger as needed) */
  options: OpenDatabaseOptions;
  /** removes the folder and drops the PostgreSQL database */
  dispose(): Promise<void>;
}

/**
 * An empty database of the given backend, nothing migrated yet. A PGlite database starts as a copy of a freshly
 * initialised cluster kept in the OS temp folder (initdb costs seconds; copying, milliseconds).
 */
export async function createIsolatedDatabase(backend: TestBackend): Promise<IsolatedDatabase> {
  const dataDir = await mkdtemp(join(tmpdir(), `flotilla-test-${backend}-`));
  if (backend === 'pglite') {
    await cp(await emptyPgliteCluster(), join(dataDir, 'db'), { recursive: true });
    return {
      backend,
      dataDir,
      databaseUrl: undefined,
      options: { dataDir },
      dispose: () => rm(dataDir, { recursive: true, force: true }),
    };
  }
  const adminUrl = postgresTestUrl();
  if (!adminUrl) {
    await rm(dataDir, { recursive: true, force: true });
    throw new Error(postgresNotRunReason());
  }
  const name = `flotilla_test_${randomBytes(6).toString('hex')}`;
  await withAdminClient(adminUrl, (client) => client.query(`CREATE DATABASE "${name}"`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  return {
    backend,
    dataDir,
    databaseUrl,
    options: { dataDir, databaseUrl },
    async dispose() {
      await withAdminClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TestDatabase {
  database: Database;
  isolated: IsolatedDatabase;
  /** closes the database, then removes it */
  dispose(): Promise<void>;
}

/** An isolated, migrated database with its Prisma client: `await openTestDatabase(backend)`. */
export async function openTestDatabase(
  backend: TestBackend,
  options: Partial<Omit<OpenDatabaseOptions, 'dataDir' | 'databaseUrl'>> = {},
): Promise<TestDatabase> {
  const isolated = await createIsolatedDatabase(backend);
  let database: Database;
  try {
    database = await openDatabase({ ...isolated.options, ...options });
  } catch (error) {
    await isolated.dispose();
    throw error;
  }
  return {
    database,
    isolated,
    async dispose() {
      await database.close();
      await isolated.dispose();
    },
  };
}

let emptyCluster: Promise<string> | undefined;

/** An initialised, empty, cleanly closed PGlite data folder, shared by test processes (one per PGlite version). */
function emptyPgliteCluster(): Promise<string> {
  emptyCluster ??= (async () => {
    const require = createRequire(import.meta.url);
    const entry = require.resolve('@electric-sql/pglite');
    let root = dirname(entry);
    while (!existsSync(join(root, 'package.json'))) root = dirname(root);
    const { version } = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string };
    const template = join(tmpdir(), `flotilla-pglite-empty-${version}`);
    if (existsSync(join(template, 'PG_VERSION'))) return template;
    const building = await mkdtemp(join(tmpdir(), 'flotilla-pglite-building-'));
    const db = await PGlite.create(join(building, 'db'));
    await db.close();
    // Another test process may have finished first: then keep theirs.
    await rename(join(building, 'db'), template).catch(() => undefined);
    await rm(building, { recursive: true, force: true });
    return template;
  })();
  return emptyCluster;
}

async function withAdminClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
