import { z } from 'zod';
import { IdSchema, NonNegativeInt, TimestampSchema, versionField } from './common.js';

/**
 * [P-4.2] The control plane has durably stored every outbox entry with seq <= upToSeq (telemetry, events and usage
 * share the sequence). Cumulative: the agent deletes all entries up to it.
 */
export const OutboxAckSchema = z.object({
  v: versionField,
  upToSeq: NonNegativeInt,
  /** CP clock when sent */
  ts: TimestampSchema,
  /**
   * Only on the ack that answers a hello: that hello's `sessionId`. The agent knows this ack was sent after its hello
   * arrived, so `ts` bounds the CP's clock for it [P-3.6].
   */
  sessionId: IdSchema.optional(),
});
export type OutboxAck = z.infer<typeof OutboxAckSchema>;
