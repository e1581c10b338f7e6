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
   * [P-4.3] the CP let go of entries after upToSeq before storing them (its buffer was full, or a write failed): the
   * agent sends every entry after upToSeq again, in seq order. Absent means false.
   */
  resend: z.boolean().optional(),
  /**
   * Only on the ack that answers a hello: that hello's `sessionId`. The agent knows this ack was sent after its hello
   * arrived, so `ts` bounds the CP's clock for it [P-3.6].
   */
  sessionId: IdSchema.optional(),
});
export type OutboxAck = z.infer<typeof OutboxAckSchema>;
