import { z } from 'zod';
import { LIMITS } from '../limits.js';
import { ByteCount, ModelSourceUrlSchema, ModelNameSchema, Sha256Schema, TimestampSchema, versionField } from './common.js';

/** One model the device should hold. [P-3.4] */
export const DesiredModelSchema = z.object({
  name: ModelNameSchema,
  /** where to fetch the GGUF file: http(s) (resumed with Range requests) or file: (single-machine setups) */
  url: ModelSourceUrlSchema,
  sha256: Sha256Schema,
  sizeBytes: z.int().min(1),
  /** pinned models are never evicted to make room */
  pinned: z.boolean(),
  /** keep it loaded in memory (true) or only on disk (false) */
  loaded: z.boolean(),
  /** tokens per sequence */
  contextSize: z.int().min(128).max(1_048_576),
  /** parallel sequences (concurrent requests) for this model */
  parallel: z.int().min(1).max(64),
});
export type DesiredModel = z.infer<typeof DesiredModelSchema>;

export const ResourceLimitsSchema = z.object({
  /** memory (RAM + VRAM) the agent may use for models; absent: what the box has */
  maxMemoryBytes: ByteCount.optional(),
  /** disk the model directory may use; absent: agent's local setting */
  diskQuotaBytes: ByteCount.optional(),
  /** requests generating at the same time, across models */
  maxParallelRequests: z.int().min(1).max(1024),
  /** requests waiting; more are refused with QUEUE_FULL */
  maxQueueLength: z.int().min(0).max(100_000),
  /** unload a non-pinned loaded model after this long without requests; absent: never */
  idleUnloadMs: z.int().min(1000).optional(),
});
export type ResourceLimits = z.infer<typeof ResourceLimitsSchema>;

/**
 * [P-3.4] Desired state, retained, the whole target at once. `version` increases with every change; an agent ignores
 * a desired state whose version is lower than one it has already applied.
 */
export const DesiredStateSchema = z
  .object({
    v: versionField,
    version: z.int().min(1),
    ts: TimestampSchema,
    models: z.array(DesiredModelSchema).max(LIMITS.models),
    limits: ResourceLimitsSchema,
  })
  .refine((d) => !Array.isArray(d.models) || new Set(d.models.map((m) => m?.name)).size === d.models.length, {
    message: 'model names must be unique',
    path: ['models'],
  });
export type DesiredState = z.infer<typeof DesiredStateSchema>;
