import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
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

/**
 * PostgreSQL backends serving one database: their process title is `postgres: <user> <database> <client> <state>`,
 * so the database's own CPU can be measured apart from other users of a shared server.
 */
export function postgresBackendPids(database: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.startsWith('postgres: ')) continue;
      // Debian prefixes the cluster: `postgres: 15/main: <user> <database> <client> <state>`
      const m = /^postgres: (?:\S+: )?(\S+) (\S+) /.exec(cmdline.replace(/\0/g, ' '));
      if (m?.[2] === database) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}
