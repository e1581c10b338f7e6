import type { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';

export type DatabaseBackend = 'pglite' | 'postgres';

/**
 * The little SQL the migrator and health checks need, on one connection (advisory locks and BEGIN/COMMIT are
 * per session). Implemented for PGlite and for a node-postgres client.
 */
export interface SqlExecutor {
  readonly backend: DatabaseBackend;
  /** One statement with `$1`-style parameters; returns its rows. */
  query<Row extends object = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<Row[]>;
  /** A script of several statements, without parameters. */
  exec(script: string): Promise<void>;
}

export function pgliteExecutor(db: PGlite): SqlExecutor {
  return {
    backend: 'pglite',
    async query<Row extends object>(sql: string, params: readonly unknown[] = []) {
      const result = await db.query<Row>(sql, [...params]);
      return result.rows;
    },
    async exec(script: string) {
      await db.exec(script);
    },
  };
}

/** Wraps one checked-out client (not a pool: a pool may run each statement on another connection). */
export function pgClientExecutor(client: pg.ClientBase): SqlExecutor {
  return {
    backend: 'postgres',
    async query<Row extends object>(sql: string, params: readonly unknown[] = []) {
      const result = await client.query<Row & pg.QueryResultRow>(sql, [...params]);
      return result.rows;
    },
    async exec(script: string) {
      // Without parameters node-postgres uses the simple query protocol, which accepts several statements.
      await client.query(script);
    },
  };
}
