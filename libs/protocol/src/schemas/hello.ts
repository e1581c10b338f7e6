import { z } from 'zod';
import { LIMITS } from '../limits.js';
import {
  ByteCount,
  IdSchema,
  ModelNameSchema,
  NonNegativeInt,
  Sha256Schema,
  TimestampSchema,
  shortText,
  versionField,
} from './common.js';

export const GpuInfoSchema = z.object({
  name: shortText(1),
  vendor: shortText().optional(),
  vramBytes: ByteCount,
  vramFreeBytes: ByteCount.optional(),
});
export type GpuInfo = z.infer<typeof GpuInfoSchema>;

/** Hardware inventory, sent in hello and (optionally) at enrollment. [P-3.1] */
export const HardwareSchema = z.object({
  cpu: z.object({
    model: shortText(),
    /** logical cores */
    cores: z.int().min(1).max(4096),
  }),
  memory: z.object({
    totalBytes: ByteCount,
    freeBytes: ByteCount,
  }),
  disk: z.object({
    /** free bytes on the volume holding the model directory */
    freeBytes: ByteCount,
    totalBytes: ByteCount.optional(),
  }),
  gpus: z.array(GpuInfoSchema).max(LIMITS.gpus),
  os: z.object({
    /** `process.platform`, e.g. `linux` */
    platform: shortText(1),
    release: shortText().optional(),
    /** `process.arch`, e.g. `x64`, `arm64` */
    arch: shortText(1),
    hostname: shortText().optional(),
  }),
});
export type Hardware = z.infer<typeof HardwareSchema>;

/** GPU backends node-llama-cpp can use; `cpu` when none. */
export const GpuBackendSchema = z.enum(['cuda', 'vulkan', 'metal', 'cpu']);
export type GpuBackend = z.infer<typeof GpuBackendSchema>;

export const RuntimeInfoSchema = z.object({
  /** e.g. `node-llama-cpp`, `node` */
  name: shortText(1),
  version: shortText(1),
  gpuBackend: GpuBackendSchema.optional(),
});
export type RuntimeInfo = z.infer<typeof RuntimeInfoSchema>;

/** A verified model file present in the agent's model directory. */
export const ModelOnDiskSchema = z.object({
  /** the model name it was downloaded as, when known */
  name: ModelNameSchema.optional(),
  fileName: shortText(1),
  sha256: Sha256Schema,
  sizeBytes: ByteCount,
});
export type ModelOnDisk = z.infer<typeof ModelOnDiskSchema>;

/** [P-3.1] Hello: sent by the agent after every (re)connect, before any other message. */
export const HelloSchema = z.object({
  v: versionField,
  ts: TimestampSchema,
  /** random per MQTT connection; the same value is in this connection's status and last will */
  sessionId: IdSchema,
  agentVersion: shortText(1),
  hardware: HardwareSchema,
  runtimes: z.array(RuntimeInfoSchema).max(LIMITS.runtimes),
  models: z.array(ModelOnDiskSchema).max(LIMITS.models),
  /** [P-4.4] highest outbox seq the agent has assigned so far (0: none) */
  outbox: z.object({ lastSeq: NonNegativeInt }),
  /** labels from the agent's local config (e.g. site=berlin), merged with labels set in the control plane */
  labels: z.record(z.string().min(1).max(63), z.string().max(LIMITS.shortText)).optional(),
});
export type Hello = z.infer<typeof HelloSchema>;
