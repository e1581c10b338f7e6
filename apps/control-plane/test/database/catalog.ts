import type { SqlExecutor } from '../../src/platform/database/index.js';

/** The public schema as PostgreSQL describes it, sorted, in plain values: two databases with equal dumps have the same schema. */
export interface CatalogDump {
  enums: { name: string; labels: string }[];
  columns: {
    table: string;
    column: string;
    position: number;
    type: string;
    nullable: string;
    default: string | null;
    precision: number | null;
  }[];
  indexes: { table: string; name: string; definition: string }[];
  constraints: { table: string; name: string; kind: string; definition: string }[];
}

export async function dumpCatalog(sql: SqlExecutor): Promise<CatalogDump> {
  const enums = await sql.query<CatalogDump['enums'][number]>(
    `SELECT t.typname::text AS name, string_agg(e.enumlabel::text, ',' ORDER BY e.enumsortorder) AS labels
       FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' GROUP BY t.typname ORDER BY 1`,
  );
  const columns = await sql.query<CatalogDump['columns'][number]>(
    `SELECT table_name::text AS "table", column_name::text AS "column", ordinal_position::int AS position,
            (CASE WHEN data_type IN ('USER-DEFINED', 'ARRAY') THEN udt_name ELSE data_type END)::text AS type,
            is_nullable::text AS nullable, column_default::text AS "default",
            coalesce(datetime_precision, numeric_precision)::int AS precision
       FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3`,
  );
  const indexes = await sql.query<CatalogDump['indexes'][number]>(
    `SELECT tablename::text AS "table", indexname::text AS name, indexdef::text AS definition
       FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2`,
  );
  const constraints = await sql.query<CatalogDump['constraints'][number]>(
    `SELECT cl.relname::text AS "table", c.conname::text AS name, c.contype::text AS kind,
            pg_get_constraintdef(c.oid)::text AS definition
       FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = c.connamespace
      -- PostgreSQL 18 (PGlite) also lists NOT NULL as constraints ('n'); nullability is compared through the columns.
      WHERE n.nspname = 'public' AND c.contype <> 'n' ORDER BY 1, 2`,
  );
  return { enums, columns, indexes, constraints };
}
