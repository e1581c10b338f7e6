import { Prisma } from '../../generated/prisma/client.js';

/** PostgreSQL's wire protocol counts bind parameters in 16 bits: a statement with more is refused (08P01). */
export const MAX_BIND_PARAMETERS = 65_535;

/** Parameters left for the statement around the rows (e.g. a timestamp in a SET clause). */
const TEMPLATE_RESERVE = 64;

/**
 * Splits rows into groups whose parameters stay under PostgreSQL's limit, so a multi-row statement that grows with
 * the fleet is run as several statements (in the caller's transaction) instead of being refused whole.
 */
export function chunkByParameters<T>(rows: readonly T[], parametersOf: (row: T) => number, limit = MAX_BIND_PARAMETERS): T[][] {
  const budget = limit - TEMPLATE_RESERVE;
  const chunks: T[][] = [];
  let current: T[] = [];
  let used = 0;
  for (const row of rows) {
    const cost = parametersOf(row);
    if (cost > budget) throw new RangeError(`one row needs ${cost} bind parameters, more than a statement may carry`);
    if (used + cost > budget && current.length > 0) {
      chunks.push(current);
      current = [];
      used = 0;
    }
    current.push(row);
    used += cost;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}

/** One statement per chunk of `rows` (SQL fragments, e.g. `(a, b, c)` tuples), each built by `statement`. */
export function chunkedStatements(rows: readonly Prisma.Sql[], statement: (rows: Prisma.Sql) => Prisma.Sql, limit = MAX_BIND_PARAMETERS): Prisma.Sql[] {
  return chunkByParameters(rows, (row) => row.values.length, limit).map((chunk) => statement(Prisma.join(chunk)));
}

/** Rows for `createMany` in groups under the limit: `columns` is the number of values each row binds. */
export function chunkRows<T>(rows: readonly T[], columns: number, limit = MAX_BIND_PARAMETERS): T[][] {
  return chunkByParameters(rows, () => columns, limit);
}
