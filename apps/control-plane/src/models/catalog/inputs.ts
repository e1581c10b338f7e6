import { z } from 'zod';
import { Prisma } from '../../generated/prisma/client.js';

/** Byte units accepted in sizes: decimal (kB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB). */
const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** Parses `1073741824`, `"512MiB"`, `"2.4 GB"`; undefined when it is not a size. */
export function parseByteSize(value: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
  if (!match) return undefined;
  const factor = UNITS[(match[2] || 'b').toLowerCase()];
  if (factor === undefined) return undefined;
  return Math.round(Number(match[1]) * factor);
}

const SIZE_HINT = 'expected a size in bytes, e.g. 524288000 or "500MiB" (units: kB MB GB TB KiB MiB GiB TiB)';

/** A size in bytes: a positive integer, or a string with a unit ("512MiB", "2.4GB"). */
export const ByteSizeSchema = z
  .union([z.number(), z.string()], { message: SIZE_HINT })
  .transform((v, ctx) => {
    const bytes = typeof v === 'number' ? v : parseByteSize(v);
    if (bytes === undefined) {
      ctx.addIssue({ code: 'custom', message: SIZE_HINT });
      return z.NEVER;
    }
    return bytes;
  })
  .pipe(z.int().min(1).max(Number.MAX_SAFE_INTEGER));

export const LabelKeySchema = z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$/, 'label keys are 1-63 letters, digits, ".", "_", "/", "-"');

/** A deployment's label selector: every key must be on the device with the same value. */
export const LabelSelectorSchema = z
  .record(LabelKeySchema, z.string().max(128))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

/** `?limit=&cursor=` on every list. */
export const PageQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().min(1).max(128).optional(),
});
export type PageQuery = z.infer<typeof PageQuerySchema>;

export interface Page<T> {
  items: T[];
  /** pass as `cursor` for the next page; null on the last one */
  nextCursor: string | null;
}

/** Rows fetched with `take: limit + 1` into a page whose cursor is the next row's id. */
export function toPage<R extends { id: string }, T>(rows: R[], limit: number, view: (row: R) => T): Page<T> {
  return { items: rows.slice(0, limit).map(view), nextCursor: rows.length > limit ? (rows[limit]?.id ?? null) : null };
}

/** The Prisma error code (P2002 unique, P2003 foreign key, P2025 not found) of a failed query, if any. */
export function prismaCode(error: unknown): string | undefined {
  return error instanceof Prisma.PrismaClientKnownRequestError ? error.code : undefined;
}
