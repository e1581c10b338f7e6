import { z } from 'zod';
import { LIMITS } from '../limits.js';
import { ByteCount, ModelNameSchema, NonNegativeInt, Percent, outboxFields } from './common.js';

const LatencyStatsSchema = z.object({
  avg: z.number().min(0),
  p50: z.number().min(0),
  p95: z.number().min(0),
  max: z.number().min(0),
});
export type LatencyStats = z.infer<typeof LatencyStatsSchema>;

export const LoadedModelSchema = z.object({
  name: ModelNameSchema,
  contextSize: z.int().min(1),
  parallel: z.int().min(1),
  activeRequests: NonNegativeInt,
  /** estimated RAM + VRAM held by the model and its contexts */
  memoryBytes: ByteCount.optional(),
  /** epoch ms of the last request served by this model */
  lastUsedAt: z.int().min(0).optional(),
});
export type LoadedModel = z.infer<typeof LoadedModelSchema>;

/** [P-3.3] Telemetry: one sample per interval, an outbox entry. Counters and stats cover the window since the previous sample. */
export const TelemetrySchema = z.object({
  ...outboxFields,
  /** length of the window this sample covers */
  windowMs: z.int().min(1),
  cpu: z.object({ percent: Percent }),
  memory: z.object({ usedBytes: ByteCount, totalBytes: ByteCount }),
  gpus: z
    .array(
      z.object({
        index: NonNegativeInt,
        vramUsedBytes: ByteCount,
        vramTotalBytes: ByteCount,
        utilizationPercent: Percent.optional(),
      }),
    )
    .max(LIMITS.gpus),
  disk: z.object({ freeBytes: ByteCount, modelsBytes: ByteCount }).optional(),
  loadedModels: z.array(LoadedModelSchema).max(LIMITS.models),
  inference: z.object({
    activeRequests: NonNegativeInt,
    queuedRequests: NonNegativeInt,
    /** finished in the window (any outcome) */
    completedRequests: NonNegativeInt,
    failedRequests: NonNegativeInt,
    generatedTokens: NonNegativeInt,
    /** generated tokens / generation time in the window; 0 when idle */
    tokensPerSecond: z.number().min(0),
    /** time to first token over requests finished in the window; absent when none */
    ttftMs: LatencyStatsSchema.optional(),
    /** total latency over requests finished in the window; absent when none */
    latencyMs: LatencyStatsSchema.optional(),
  }),
  draining: z.boolean(),
});
export type Telemetry = z.infer<typeof TelemetrySchema>;
