import { z } from 'zod';
import { ErrorCodeSchema, IdSchema, ModelNameSchema, NonNegativeInt, outboxFields } from './common.js';

/** [P-3.11] One finished inference (any origin, any outcome). An outbox entry. */
export const UsageRecordSchema = z.object({
  ...outboxFields,
  requestId: IdSchema,
  model: ModelNameSchema,
  /** `control-plane`: dispatched over MQTT; `local`: served by the agent's own HTTP endpoint */
  origin: z.enum(['control-plane', 'local']),
  outcome: z.enum(['success', 'failed', 'cancelled']),
  errorCode: ErrorCodeSchema.optional(),
  promptTokens: NonNegativeInt,
  completionTokens: NonNegativeInt,
  /** absent when no token was produced */
  ttftMs: z.number().min(0).optional(),
  latencyMs: z.number().min(0),
  /** time spent waiting in the queue */
  queueMs: z.number().min(0).optional(),
});
export type UsageRecord = z.infer<typeof UsageRecordSchema>;
