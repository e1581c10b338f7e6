import { z } from 'zod';
import { DetailsSchema, ErrorCodeSchema, messageText } from '../schemas/common.js';

/** [P-5.2] Body of every REST error response (the OpenAI-compatible gateway keeps OpenAI's own error shape). */
export const ApiErrorBodySchema = z.object({
  error: z.object({
    code: ErrorCodeSchema,
    message: messageText(),
    /** e.g. `requestId` for correlation, validation issues */
    details: DetailsSchema.optional(),
  }),
});
export type ApiErrorBody = z.infer<typeof ApiErrorBodySchema>;
