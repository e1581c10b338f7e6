import { z } from 'zod';
import { LIMITS } from '../limits.js';
import {
  ByteCount,
  ErrorCodeSchema,
  ModelNameSchema,
  Sha256Schema,
  TimestampSchema,
  messageText,
  versionField,
} from './common.js';

const base = {
  name: ModelNameSchema,
  sha256: Sha256Schema,
  /** the desired-state version this state works toward; 0 for models found on disk but not desired */
  desiredVersion: z.int().min(0),
  /** when this model's state last changed (epoch ms) */
  since: TimestampSchema,
};

/** [P-3.5] The state of one model on the device. */
export const ModelStatusSchema = z.discriminatedUnion('state', [
  z.object({ ...base, state: z.literal('pending') }),
  z.object({ ...base, state: z.literal('downloading'), receivedBytes: ByteCount, totalBytes: ByteCount }),
  z.object({ ...base, state: z.literal('verifying') }),
  z.object({ ...base, state: z.literal('loading') }),
  /** on disk and verified; `loaded` says whether it is in memory and serving */
  z.object({ ...base, state: z.literal('ready'), loaded: z.boolean() }),
  z.object({ ...base, state: z.literal('unloading') }),
  z.object({ ...base, state: z.literal('failed'), code: ErrorCodeSchema, message: messageText() }),
]);
export type ModelStatus = z.infer<typeof ModelStatusSchema>;
export type ModelStateName = ModelStatus['state'];

/**
 * [P-3.5] Reported model states, retained: a full snapshot of every model the agent holds or works on. A model absent
 * from the snapshot is gone from the device.
 */
export const ModelStateReportSchema = z.object({
  v: versionField,
  ts: TimestampSchema,
  /** highest desired-state version the agent has received */
  desiredVersion: z.int().min(0),
  models: z.array(ModelStatusSchema).max(LIMITS.models),
});
export type ModelStateReport = z.infer<typeof ModelStateReportSchema>;
