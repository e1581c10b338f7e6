import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { onInterrupt } from './cleanup.js';

export const DEFAULT_POSTGRES_URL = 'postgresql://postgres@127.0.0.1:5432/postgres';

export interface BenchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

/**
 * A fresh PostgreSQL database for one benchmark run on a shared server (`adminUrl` names a database the user may
 * connect to and a user that may create databases); `drop()` removes it and only it.
 */
export async function createBenchDatabase(adminUrl = process.env.FLOTILLA_BENCH_POSTGRES_URL ?? DEFAULT_POSTGRES_URL): Promise<BenchDatabase> {
  const name = `flotilla_bench_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const drop = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    try {
      await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    } finally {
      await c.end();
    }
  };
  const unregister = onInterrupt(drop);
  return {
    name,
    url: url.toString(),
    async drop() {
      unregister();
      await drop();
    },
  };
}
