import { z } from 'zod';
import { ErrorCodeSchema, IdSchema, ModelNameSchema, TimestampSchema, messageText, versionField } from './common.js';

const base = {
  v: versionField,
  /** unique per command; the agent executes a commandId at most once */
  commandId: IdSchema,
  issuedAt: TimestampSchema,
  /** the agent rejects a command received after this time (epoch ms) */
  expiresAt: TimestampSchema.optional(),
};

/** [P-3.9] An imperative command; the discriminator is `kind`, arguments are in `args`. */
export const CommandSchema = z.discriminatedUnion('kind', [
  /** stop taking new requests, finish (or after timeoutMs cancel) the running ones, report status draining */
  z.object({ ...base, kind: z.literal('drain'), args: z.object({ timeoutMs: z.int().min(0).optional() }) }),
  /** end a drain */
  z.object({ ...base, kind: z.literal('resume'), args: z.object({}) }),
  /** detect hardware and models on disk again and send a new hello */
  z.object({ ...base, kind: z.literal('refresh-inventory'), args: z.object({}) }),
  /** unload a model from memory now (it stays on disk) */
  z.object({ ...base, kind: z.literal('unload-model'), args: z.object({ model: ModelNameSchema }) }),
  /** delete a model file from disk (refused while the model is desired) */
  z.object({ ...base, kind: z.literal('delete-model'), args: z.object({ model: ModelNameSchema }) }),
  /** send every outbox entry not yet acknowledged again */
  z.object({ ...base, kind: z.literal('resend-outbox'), args: z.object({}) }),
]);
export type Command = z.infer<typeof CommandSchema>;
export type CommandKind = Command['kind'];

/**
 * [P-3.9] Acknowledgement of a command. `accepted` on receipt (optional for instant commands), then exactly one of
 * `completed`, `rejected` (not started: invalid, expired, unknown kind) or `failed` (started, did not finish).
 */
export const CommandAckSchema = z
  .object({
    v: versionField,
    commandId: IdSchema,
    status: z.enum(['accepted', 'completed', 'rejected', 'failed']),
    ts: TimestampSchema,
    code: ErrorCodeSchema.optional(),
    message: messageText().optional(),
  })
  .refine((a) => (a.status !== 'rejected' && a.status !== 'failed') || a.code !== undefined, {
    message: 'a rejected or failed ack carries a code',
    path: ['code'],
  });
export type CommandAck = z.infer<typeof CommandAckSchema>;
