import { z } from 'zod';

/** A variable set to blank (or only spaces) counts as unset, so its default applies. */
export const blankAsUnset = <T extends z.ZodType>(schema: T) =>
  z.preprocess((value) => (typeof value === 'string' && value.trim() === '' ? undefined : value), schema);
