import { z } from 'zod';
import { NonNegativeInt, TimestampSchema, versionField } from './common.js';

/**
 * [P-4.2] The control plane has durably stored every outbox entry with seq <= upToSeq (telemetry, events and usage
 * share the sequence). Cumulative: the agent deletes all entries up to it.
 */
export const OutboxAckSchema = z.object({
  v: versionField,
  upToSeq: NonNegativeInt,
  ts: TimestampSchema,
});
export type OutboxAck = z.infer<typeof OutboxAckSchema>;
