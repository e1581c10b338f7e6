import { z } from 'zod';

/** `?limit=&cursor=` on every list of the REST API. */
export const PageQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  /** the `nextCursor` of the previous page */
  cursor: z.string().min(1).max(128).optional(),
});
export type PageQuery = z.output<typeof PageQuerySchema>;

/** A page of a list: `{items, nextCursor}`; `nextCursor` is null on the last page. */
export const pageOf = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), nextCursor: z.string().nullable().describe('pass as `cursor` for the next page; null on the last one') });

export interface Page<T> {
  items: T[];
  /** pass as `cursor` for the next page; null on the last one */
  nextCursor: string | null;
}

/** A point in time as JSON carries it: ISO 8601 in UTC (`Date.toJSON()`). */
export const IsoDateTimeSchema = z.iso.datetime();
