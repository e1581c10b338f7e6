import { z } from 'zod';
import { IdSchema, NonNegativeInt, TimestampSchema } from '../schemas/common.js';

/** Why one attempt of a gateway request ended. */
export const AttemptEndSchema = z.enum(['ok', 'offline', 'timeout', 'cancelled', 'error']);
export type AttemptEnd = z.infer<typeof AttemptEndSchema>;

/**
 * One try of a gateway request on one device (or the cloud fallback), in order. The request record's list of these
 * is the one account of where a request went: the dashboard's request trace and the accounting read it.
 */
export const RequestAttemptSchema = z.object({
  /** the `attempt` sent on the wire [P-3.6]; 1, 2, ... */
  attempt: z.int().min(1),
  /** null for the cloud fallback */
  deviceId: z.string().nullable(),
  startedAt: TimestampSchema,
  endedAt: TimestampSchema,
  end: AttemptEndSchema,
  /** the protocol error code when `end` is not `ok` */
  code: z.string().max(64).optional(),
  /** completion tokens this attempt delivered to the client */
  tokens: NonNegativeInt,
  /** characters of earlier attempts' text it continued after; 0 when it started the answer */
  continuationChars: NonNegativeInt,
});
export type RequestAttempt = z.infer<typeof RequestAttemptSchema>;

/** `GET /api/v1/requests/:id`: one recorded gateway request. */
export const RequestRecordSchema = z.object({
  requestId: IdSchema,
  requestedModel: z.string(),
  model: z.string().nullable(),
  tier: z.enum(['small', 'medium', 'large']).nullable(),
  /** the device that finished the answer (see `attempts` for every device that took part) */
  deviceId: z.string().nullable(),
  cloud: z.boolean(),
  latencyMs: z.number().nullable(),
  ttftMs: z.number().nullable(),
  tokensIn: NonNegativeInt,
  tokensOut: NonNegativeInt,
  outcome: z.enum(['success', 'failed', 'timeout', 'cancelled', 'rejected']),
  errorCode: z.string().nullable(),
  retries: NonNegativeInt,
  stream: z.boolean(),
  createdAt: z.string(),
  attempts: z.array(RequestAttemptSchema),
});
export type RequestRecordView = z.infer<typeof RequestRecordSchema>;
