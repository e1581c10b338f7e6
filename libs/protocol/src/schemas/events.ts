import { z } from 'zod';
import { DetailsSchema, IdSchema, ModelNameSchema, messageText, outboxFields } from './common.js';

/** Event codes: an ErrorCode, or an event-specific code such as MODEL_EVICTED or AGENT_STARTED. */
export const EventCodeSchema = z
  .string()
  .regex(/^[A-Z][A-Z0-9_]{1,63}$/, 'expected an UPPER_SNAKE_CASE code');

/** [P-3.10] Something that happened on the agent worth keeping (model failure, protocol error, eviction...). An outbox entry. */
export const DeviceEventSchema = z.object({
  ...outboxFields,
  level: z.enum(['debug', 'info', 'warn', 'error']),
  code: EventCodeSchema,
  message: messageText(),
  model: ModelNameSchema.optional(),
  requestId: IdSchema.optional(),
  details: DetailsSchema.optional(),
});
export type DeviceEvent = z.infer<typeof DeviceEventSchema>;
