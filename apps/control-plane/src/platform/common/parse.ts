import type { z } from 'zod';

/** Parses a request body or query with its schema; a ZodError becomes a 400 in the global filter. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  return schema.parse(input ?? {});
}
