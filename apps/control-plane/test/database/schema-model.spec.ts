import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { MIGRATIONS_TABLE, resolveMigrationsDir, runMigrations, type SqlExecutor } from '../../src/platform/database/index.js';
import { createIsolatedDatabase, describeBackends, type IsolatedDatabase } from '../support/databases.js';
import { withSqlExecutor } from '../support/sql.js';

/**
 * The migrations are written by hand (Prisma's schema engine cannot be downloaded here), so this test is what keeps
 * them equal to prisma/schema.prisma: it derives the tables, columns, types, defaults, keys, indexes and foreign keys
 * Prisma would create from the schema's DMMF (written by prisma/schema-model-generator.mjs during generation) using
 * Prisma's PostgreSQL conventions, and compares them with what the migrations actually built.
 */

interface DmmfField {
  name: string;
  dbName?: string | null;
  kind: 'scalar' | 'enum' | 'object' | 'unsupported';
  isList: boolean;
  isRequired: boolean;
  isUpdatedAt: boolean;
  hasDefaultValue: boolean;
  type: string;
  nativeType?: unknown;
  default?: unknown;
  relationFromFields?: string[];
  relationToFields?: string[];
  relationOnDelete?: string;
  relationOnUpdate?: string;
}
interface DmmfModel {
  name: string;
  dbName: string | null;
  fields: DmmfField[];
}
interface DmmfIndex {
  model: string;
  type: 'id' | 'unique' | 'normal' | 'fulltext';
  name?: string;
  dbName?: string;
  fields: { name: string }[];
}
interface DmmfEnum {
  name: string;
  dbName: string | null;
  values: { name: string; dbName: string | null }[];
}
interface Datamodel {
  models: DmmfModel[];
  enums: DmmfEnum[];
  indexes: DmmfIndex[];
}

interface ColumnShape {
  type: string;
  nullable: boolean;
  default: string | null;
}
interface IndexShape {
  table: string;
  unique: boolean;
  primary: boolean;
  columns: string;
}
interface ForeignKeyShape {
  table: string;
  columns: string;
  references: string;
  onDelete: string;
  onUpdate: string;
}
interface SchemaShape {
  enums: Record<string, string[]>;
  columns: Record<string, ColumnShape>;
  indexes: Record<string, IndexShape>;
  foreignKeys: Record<string, ForeignKeyShape>;
}

const SCALAR_TYPES: Record<string, string> = {
  String: 'text',
  Int: 'integer',
  BigInt: 'bigint',
  Float: 'double precision',
  Boolean: 'boolean',
  DateTime: 'timestamp(3) without time zone',
  Json: 'jsonb',
  Decimal: 'numeric(65,30)',
  Bytes: 'bytea',
};
const ARRAY_ELEMENT: Record<string, string> = { String: 'text', Int: 'integer', BigInt: 'bigint', Float: 'double precision', Boolean: 'boolean' };
const REFERENTIAL_ACTIONS: Record<string, string> = {
  Cascade: 'CASCADE',
  Restrict: 'RESTRICT',
  NoAction: 'NO ACTION',
  SetNull: 'SET NULL',
  SetDefault: 'SET DEFAULT',
};

function sqlLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** What Prisma's migration engine creates for this datamodel on PostgreSQL. */
function expectedShape(dm: Datamodel): SchemaShape {
  const enumDbName = new Map(dm.enums.map((e) => [e.name, e.dbName ?? e.name]));
  const models = new Map(dm.models.map((m) => [m.name, m]));
  const table = (model: DmmfModel) => model.dbName ?? model.name;
  const column = (model: DmmfModel, fieldName: string) => {
    const field = model.fields.find((f) => f.name === fieldName);
    if (!field) throw new Error(`${model.name}.${fieldName} not found`);
    return field.dbName ?? field.name;
  };
  const shape: SchemaShape = { enums: {}, columns: {}, indexes: {}, foreignKeys: {} };

  for (const e of dm.enums) shape.enums[e.dbName ?? e.name] = e.values.map((v) => v.dbName ?? v.name);

  for (const model of dm.models) {
    for (const field of model.fields) {
      if (field.kind === 'object') {
        if (!field.relationFromFields?.length) continue;
        const target = models.get(field.type);
        if (!target) throw new Error(`relation target ${field.type} not found`);
        const fromColumns = field.relationFromFields.map((f) => column(model, f));
        // Prisma's defaults: optional relations SET NULL, required ones RESTRICT; updates CASCADE.
        const onDelete = field.relationOnDelete ?? (field.isRequired ? 'Restrict' : 'SetNull');
        shape.foreignKeys[`${table(model)}_${fromColumns.join('_')}_fkey`] = {
          table: table(model),
          columns: fromColumns.join(','),
          references: `${table(target)}(${(field.relationToFields ?? []).map((f) => column(target, f)).join(',')})`,
          onDelete: REFERENTIAL_ACTIONS[onDelete] ?? onDelete,
          onUpdate: REFERENTIAL_ACTIONS[field.relationOnUpdate ?? 'Cascade'] ?? String(field.relationOnUpdate),
        };
        continue;
      }
      if (field.nativeType) throw new Error(`${model.name}.${field.name}: native types are not mapped by this test yet`);
      const enumType = field.kind === 'enum' ? enumDbName.get(field.type) : undefined;
      let type: string;
      if (field.isList) type = `${enumType ?? ARRAY_ELEMENT[field.type] ?? `?${field.type}`}[]`;
      else type = enumType ?? SCALAR_TYPES[field.type] ?? `?${field.type}`;
      shape.columns[`${table(model)}.${field.dbName ?? field.name}`] = {
        type,
        // Prisma leaves scalar lists nullable in PostgreSQL.
        nullable: field.isList || !field.isRequired,
        default: defaultExpression(field, type),
      };
    }
  }

  for (const index of dm.indexes) {
    const model = models.get(index.model);
    if (!model) throw new Error(`index on unknown model ${index.model}`);
    const columns = index.fields.map((f) => column(model, f.name));
    const suffix = index.type === 'id' ? 'pkey' : index.type === 'unique' ? 'key' : 'idx';
    const name = index.dbName ?? (index.type === 'id' ? `${table(model)}_pkey` : `${table(model)}_${columns.join('_')}_${suffix}`);
    shape.indexes[name] = {
      table: table(model),
      unique: index.type !== 'normal',
      primary: index.type === 'id',
      columns: columns.join(','),
    };
  }
  return shape;
}

function defaultExpression(field: DmmfField, type: string): string | null {
  if (!field.hasDefaultValue) return null;
  const value = field.default;
  if (Array.isArray(value)) {
    if (value.length > 0) throw new Error(`${field.name}: non-empty list defaults are not mapped by this test yet`);
    return `ARRAY[]::${type}`;
  }
  if (value && typeof value === 'object' && 'name' in value) {
    const fn = (value as { name: string }).name;
    if (fn === 'now') return 'CURRENT_TIMESTAMP';
    if (fn === 'uuid' || fn === 'cuid' || fn === 'nanoid' || fn === 'ulid') return null; // generated by the client
    throw new Error(`${field.name}: default function ${fn} is not mapped by this test yet`);
  }
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (typeof value === 'string') {
    if (field.kind === 'enum') return `${sqlLiteral(value)}::${type}`;
    if (field.type === 'Json') return `${sqlLiteral(value)}::jsonb`;
    if (field.type === 'String') return `${sqlLiteral(value)}::text`;
    if (field.type === 'BigInt' || field.type === 'Int' || field.type === 'Float') return value;
  }
  throw new Error(`${field.name}: default ${JSON.stringify(value)} is not mapped by this test yet`);
}

const ACTIONS: Record<string, string> = { a: 'NO ACTION', r: 'RESTRICT', c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' };

/** The same shape, read from the database's catalog. */
async function actualShape(sql: SqlExecutor): Promise<SchemaShape> {
  const shape: SchemaShape = { enums: {}, columns: {}, indexes: {}, foreignKeys: {} };
  const enums = await sql.query<{ name: string; labels: string }>(
    `SELECT t.typname::text AS name, string_agg(e.enumlabel::text, ',' ORDER BY e.enumsortorder) AS labels
       FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' GROUP BY t.typname`,
  );
  for (const e of enums) shape.enums[e.name] = e.labels.split(',');

  const columns = await sql.query<{ table: string; column: string; type: string; not_null: boolean; default: string | null }>(
    `SELECT c.relname::text AS "table", a.attname::text AS "column", format_type(a.atttypid, a.atttypmod) AS type,
            a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS "default"
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped`,
  );
  for (const c of columns) {
    shape.columns[`${c.table}.${c.column}`] = { type: c.type, nullable: !c.not_null, default: c.default };
  }

  const indexes = await sql.query<{ name: string; table: string; unique: boolean; primary: boolean; columns: string }>(
    `SELECT i.relname::text AS name, t.relname::text AS "table", ix.indisunique AS "unique", ix.indisprimary AS "primary",
            (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord)
               FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) AS columns
       FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
       JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE n.nspname = 'public'`,
  );
  for (const { name, ...rest } of indexes) shape.indexes[name] = rest;

  const fks = await sql.query<{ name: string; table: string; columns: string; references: string; on_delete: string; on_update: string }>(
    `SELECT c.conname::text AS name, t.relname::text AS "table",
            (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS columns,
            r.relname::text || '(' || (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord)
               FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) || ')' AS "references",
            c.confdeltype::text AS on_delete, c.confupdtype::text AS on_update
       FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid
       JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE n.nspname = 'public' AND c.contype = 'f'`,
  );
  for (const fk of fks) {
    shape.foreignKeys[fk.name] = {
      table: fk.table,
      columns: fk.columns,
      references: fk.references,
      onDelete: ACTIONS[fk.on_delete] ?? fk.on_delete,
      onUpdate: ACTIONS[fk.on_update] ?? fk.on_update,
    };
  }
  return shape;
}

const schemaModelFile = fileURLToPath(new URL('../../src/generated/schema-model.json', import.meta.url));

describeBackends('migrations match prisma/schema.prisma', (backend) => {
  let isolated: IsolatedDatabase;
  let expected: SchemaShape;
  let actual: SchemaShape;

  beforeAll(async () => {
    const datamodel = JSON.parse(await readFile(schemaModelFile, 'utf8')) as Datamodel;
    expected = expectedShape(datamodel);
    isolated = await createIsolatedDatabase(backend);
    actual = await withSqlExecutor(isolated, async (sql) => {
      await runMigrations(sql, { migrationsDir: resolveMigrationsDir() });
      await sql.exec(`DROP TABLE "${MIGRATIONS_TABLE}"`);
      return actualShape(sql);
    });
  });
  afterAll(() => isolated?.dispose());

  it('has the enums of the schema, values in order', () => {
    expect(actual.enums).toEqual(expected.enums);
  });

  it('has exactly the columns of the schema, with their types, nullability and defaults', () => {
    expect(Object.keys(expected.columns).length).toBeGreaterThan(100);
    expect(actual.columns).toEqual(expected.columns);
  });

  it('has the primary keys, unique constraints and indexes of the schema, named as Prisma names them', () => {
    for (const name of Object.keys(expected.indexes)) expect(name.length, name).toBeLessThanOrEqual(63);
    expect(actual.indexes).toEqual(expected.indexes);
  });

  it('has the foreign keys of the schema with their referential actions', () => {
    expect(Object.keys(expected.foreignKeys).length).toBeGreaterThan(5);
    expect(actual.foreignKeys).toEqual(expected.foreignKeys);
  });
});
