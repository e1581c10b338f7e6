import { z } from 'zod';
import { LIMITS } from '../limits.js';
import {
  ErrorCodeSchema,
  IdSchema,
  ModelNameSchema,
  NonNegativeInt,
  Sha256Schema,
  TimestampSchema,
  messageText,
  shortText,
  versionField,
} from './common.js';

// Values borrowed from the OpenAI chat API keep OpenAI's field names (tool_calls, tool_call_id, json_schema) so the
// gateway passes them through unchanged; the protocol's own fields are camelCase. [P-3.6]

const content = () => z.string().max(LIMITS.contentLength);
/** A token id of the model's vocabulary. */
const TokenId = z.int().min(0).max(2 ** 31 - 1);
const FunctionName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, 'expected a function name of letters, digits, _ and -');
/** A JSON Schema object (tool parameters, response schema); bounded by the payload limit. */
const JsonSchemaObject = z.record(z.string().max(LIMITS.shortText), z.unknown());

export const ToolCallSchema = z.object({
  id: IdSchema,
  type: z.literal('function'),
  function: z.object({
    name: FunctionName,
    /** JSON text, as the model produced it */
    arguments: content(),
  }),
});
export type ToolCall = z.infer<typeof ToolCallSchema>;

export const ChatMessageSchema = z.discriminatedUnion('role', [
  z.object({ role: z.literal('system'), content: content() }),
  z.object({ role: z.literal('user'), content: content(), name: shortText(1).optional() }),
  z.object({
    role: z.literal('assistant'),
    content: content().nullable(),
    tool_calls: z.array(ToolCallSchema).max(LIMITS.toolCalls).optional(),
  }),
  z.object({ role: z.literal('tool'), tool_call_id: IdSchema, content: content() }),
]);
export type ChatMessage = z.infer<typeof ChatMessageSchema>;
export type AssistantMessage = Extract<ChatMessage, { role: 'assistant' }>;
export const AssistantMessageSchema = ChatMessageSchema.options[2];

export const ToolSchema = z.object({
  type: z.literal('function'),
  function: z.object({
    name: FunctionName,
    description: z.string().max(LIMITS.messageLength).optional(),
    parameters: JsonSchemaObject.optional(),
  }),
});
export type Tool = z.infer<typeof ToolSchema>;

export const ToolChoiceSchema = z.union([
  z.enum(['none', 'auto', 'required']),
  z.object({ type: z.literal('function'), function: z.object({ name: FunctionName }) }),
]);
export type ToolChoice = z.infer<typeof ToolChoiceSchema>;

export const ResponseFormatSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    json_schema: z.object({
      name: FunctionName,
      description: z.string().max(LIMITS.messageLength).optional(),
      schema: JsonSchemaObject,
      strict: z.boolean().optional(),
    }),
  }),
]);
export type ResponseFormat = z.infer<typeof ResponseFormatSchema>;

/** [P-3.6] An inference job for this device. */
export const InferenceRequestSchema = z.object({
  v: versionField,
  /** unique per job; a retry on another device keeps the id and raises `attempt` */
  requestId: IdSchema,
  attempt: z.int().min(1).max(100),
  model: ModelNameSchema,
  messages: z.array(ChatMessageSchema).min(1).max(LIMITS.chatMessages),
  tools: z.array(ToolSchema).max(LIMITS.tools).optional(),
  toolChoice: ToolChoiceSchema.optional(),
  responseFormat: ResponseFormatSchema.optional(),
  maxTokens: z.int().min(1).max(1_048_576).optional(),
  temperature: z.number().min(0).max(2).optional(),
  topP: z.number().gt(0).max(1).optional(),
  seed: z.int().optional(),
  stop: z.array(z.string().min(1).max(LIMITS.stopLength)).max(LIMITS.stopSequences).optional(),
  /** 0 (lowest) .. 9 (highest); higher runs first, FIFO within a priority */
  priority: z.int().min(0).max(9),
  /** epoch ms (CP clock) after which the result is useless; the agent answers DEADLINE_EXCEEDED and stops */
  deadline: TimestampSchema,
  /** CP clock when sent; with the clock offset learnt at hello the agent drops a request sent before its connection [P-3.6] */
  sentAt: TimestampSchema,
  /** send chunks while generating (true) or only the final result (false) */
  stream: z.boolean(),
  /**
   * failover: assistant text the client has already received; the agent continues after it and never resends it.
   * `tokens`: the token ids that text was generated as, by the model file `modelSha256`: an agent holding that file
   * continues after exactly those tokens (identical to the uninterrupted answer); any other agent uses the text. [P-3.6]
   */
  continuation: z
    .object({
      content: content(),
      tokens: z.object({ modelSha256: Sha256Schema, ids: z.array(TokenId).min(1).max(LIMITS.continuationTokenIds) }).optional(),
    })
    .optional(),
  /** session affinity key (multi-turn chats), a hint: the reference agent does not reuse contexts by it [P-3.6] */
  sessionKey: IdSchema.optional(),
});
export type InferenceRequest = z.infer<typeof InferenceRequestSchema>;

/** [P-3.6] Which try of a request a response or cancel belongs to: the same `requestId` runs once per attempt. */
const attemptField = () => InferenceRequestSchema.shape.attempt;

export const ToolCallDeltaSchema = z.object({
  /** position of the tool call in the final message's tool_calls */
  index: z.int().min(0).max(LIMITS.toolCalls - 1),
  id: IdSchema.optional(),
  type: z.literal('function').optional(),
  function: z
    .object({
      name: FunctionName.optional(),
      arguments: z.string().max(LIMITS.deltaLength).optional(),
    })
    .optional(),
});
export type ToolCallDelta = z.infer<typeof ToolCallDeltaSchema>;

/** [P-3.7] A streamed piece of the answer. `seq` starts at 0 and increases by 1 per chunk of one attempt. */
export const InferenceChunkSchema = z
  .object({
    v: versionField,
    type: z.literal('chunk'),
    requestId: IdSchema,
    attempt: attemptField(),
    seq: NonNegativeInt,
    /** tokens generated for this chunk's text, so the gateway can count what it delivered [P-3.7] */
    tokens: NonNegativeInt.optional(),
    /** the ids of those tokens, in order, so a failover can continue after exactly them [P-3.6, P-3.7] */
    tokenIds: z.array(TokenId).max(LIMITS.chunkTokenIds).optional(),
    delta: z.object({
      content: z.string().max(LIMITS.deltaLength).optional(),
      toolCalls: z.array(ToolCallDeltaSchema).max(LIMITS.toolCalls).optional(),
    }),
  })
  .refine((c) => c.delta?.content !== undefined || c.delta?.toolCalls !== undefined, {
    message: 'a chunk carries content and/or toolCalls',
    path: ['delta'],
  });
export type InferenceChunk = z.infer<typeof InferenceChunkSchema>;

export const FinishReasonSchema = z.enum(['stop', 'length', 'tool_calls']);
export type FinishReason = z.infer<typeof FinishReasonSchema>;

export const UsageCountsSchema = z.object({ promptTokens: NonNegativeInt, completionTokens: NonNegativeInt });

/** [P-3.7] The final answer; ends the request. Carries the whole message even when chunks were streamed. */
export const InferenceResultSchema = z.object({
  v: versionField,
  type: z.literal('result'),
  requestId: IdSchema,
  attempt: attemptField(),
  finishReason: FinishReasonSchema,
  message: AssistantMessageSchema,
  usage: UsageCountsSchema,
  timings: z.object({
    /** time to first token, from the agent receiving the request */
    ttftMs: z.number().min(0),
    totalMs: z.number().min(0),
  }),
  /** number of chunks sent before this result (0 when not streaming); informational, the CP does not use it [P-3.7] */
  chunkCount: NonNegativeInt,
});
export type InferenceResult = z.infer<typeof InferenceResultSchema>;

/** [P-3.7] The request failed; ends the request. `retryable` tells the gateway whether to fail over. */
export const InferenceErrorSchema = z.object({
  v: versionField,
  type: z.literal('error'),
  requestId: IdSchema,
  attempt: attemptField(),
  code: ErrorCodeSchema,
  message: messageText(),
  retryable: z.boolean(),
});
export type InferenceError = z.infer<typeof InferenceErrorSchema>;

/** [P-3.7] Payload of the inference responses topic. */
export const InferenceResponseSchema = z.discriminatedUnion('type', [
  InferenceChunkSchema,
  InferenceResultSchema,
  InferenceErrorSchema,
]);
export type InferenceResponse = z.infer<typeof InferenceResponseSchema>;

/** [P-3.8] Stop working on a request; the agent answers with an error CANCELLED unless it already finished. */
export const InferenceCancelSchema = z.object({
  v: versionField,
  requestId: IdSchema,
  /** the attempt to stop; a later attempt of the same request on the same device keeps running */
  attempt: attemptField(),
  reason: z.enum(['client-disconnected', 'deadline', 'failover', 'shutdown']).optional(),
});
export type InferenceCancel = z.infer<typeof InferenceCancelSchema>;
