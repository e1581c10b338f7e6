import { PGlite } from '@electric-sql/pglite';
import { join } from 'node:path';
import pg from 'pg';
import { pgClientExecutor, pgliteExecutor, type SqlExecutor } from '../../src/platform/database/index.js';
import type { IsolatedDatabase } from './databases.js';

/** A raw SQL session on an isolated database (no Prisma, no migrations), closed after `fn`. */
export async function withSqlExecutor<T>(isolated: IsolatedDatabase, fn: (sql: SqlExecutor) => Promise<T>): Promise<T> {
  if (isolated.databaseUrl === undefined) {
    const db = await PGlite.create(join(isolated.dataDir, 'db'));
    try {
      return await fn(pgliteExecutor(db));
    } finally {
      await db.close();
    }
  }
  const client = new pg.Client({ connectionString: isolated.databaseUrl });
  await client.connect();
  try {
    return await fn(pgClientExecutor(client));
  } finally {
    await client.end();
  }
}
