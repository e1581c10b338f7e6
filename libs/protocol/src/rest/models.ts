import { z } from 'zod';
import { ModelNameSchema, ModelSourceUrlSchema, Sha256Schema } from '../schemas/common.js';
import { IsoDateTimeSchema, PageQuerySchema, pageOf } from './page.js';

/** The catalog's tiers: `model: auto` on the gateway picks among them. */
export const MODEL_TIERS = ['small', 'medium', 'large'] as const;
export const ModelTierSchema = z.enum(MODEL_TIERS);
export type ModelTier = z.infer<typeof ModelTierSchema>;

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

/** A size in bytes: a positive integer, or a string with a unit ("512MiB", "2.4GB"); parsed to bytes. */
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

/** `POST /api/v1/models` body: a catalog entry (the fleet file's `models[]` items are the same). */
export const ModelInputSchema = z.strictObject({
  name: ModelNameSchema,
  /** where devices fetch the GGUF file: http(s), or file: for agents on this machine */
  sourceUrl: ModelSourceUrlSchema,
  sha256: Sha256Schema,
  sizeBytes: ByteSizeSchema,
  quantization: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/, 'expected a quantization name such as Q4_K_M, Q8_0 or F16'),
  /** RAM + VRAM needed to serve it with its default context */
  memoryBytes: ByteSizeSchema,
  contextLength: z.int().min(128).max(1_048_576),
  tier: ModelTierSchema,
});
/** What a client sends (sizes may carry units). */
export type ModelInputBody = z.input<typeof ModelInputSchema>;
/** What the control plane works with after parsing (sizes in bytes). */
export type ModelInput = z.output<typeof ModelInputSchema>;

/** `PATCH /api/v1/models/:ref` body: any fields of a catalog entry, at least one. */
export const ModelPatchSchema = ModelInputSchema.partial().refine((p) => Object.keys(p).length > 0, 'nothing to change');
export type ModelPatch = z.output<typeof ModelPatchSchema>;

/** `GET /api/v1/models` query. */
export const ModelListQuerySchema = PageQuerySchema.extend({ tier: ModelTierSchema.optional() });

/** `:ref` of `/api/v1/models/:ref`. */
export const ModelRefParamsSchema = z.object({ ref: z.string().min(1).describe('model id or name') });

/** A catalog entry as the API answers it (`GET/POST/PATCH/DELETE /api/v1/models...`). */
export const ModelSchema = z.strictObject({
  id: z.string().min(1),
  name: ModelNameSchema,
  sourceUrl: ModelSourceUrlSchema,
  sha256: Sha256Schema,
  sizeBytes: z.int().min(1),
  quantization: z.string().min(1),
  memoryBytes: z.int().min(1),
  contextLength: z.int().min(1),
  tier: ModelTierSchema,
  createdAt: IsoDateTimeSchema,
  updatedAt: IsoDateTimeSchema,
});
export type ModelView = z.infer<typeof ModelSchema>;

/** `GET /api/v1/models` answer. */
export const ModelPageSchema = pageOf(ModelSchema);
