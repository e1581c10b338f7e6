import type { Page } from '@flotilla/protocol';
import { Prisma } from '../../generated/prisma/client.js';

/** Rows fetched with `take: limit + 1` into a page whose cursor is the next row's id. */
export function toPage<R extends { id: string }, T>(rows: R[], limit: number, view: (row: R) => T): Page<T> {
  return { items: rows.slice(0, limit).map(view), nextCursor: rows.length > limit ? (rows[limit]?.id ?? null) : null };
}

/** The Prisma error code (P2002 unique, P2003 foreign key, P2025 not found) of a failed query, if any. */
export function prismaCode(error: unknown): string | undefined {
  return error instanceof Prisma.PrismaClientKnownRequestError ? error.code : undefined;
}
