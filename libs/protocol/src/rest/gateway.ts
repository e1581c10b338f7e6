import { z } from 'zod';
import { FinishReasonSchema, ResponseFormatSchema, ToolCallDeltaSchema, ToolCallSchema, ToolChoiceSchema, ToolSchema } from '../schemas/inference.js';

// REST contract of the gateway: its admin routes under /api/v1 and the OpenAI-compatible routes under /v1.

export const RoutingTierSchema = z.enum(['small', 'medium', 'large']);
export type RoutingTier = z.infer<typeof RoutingTierSchema>;

/** `GET /api/v1/requests/:id` path: the `x-request-id` of an answer. */
export const RequestRecordParamsSchema = z.object({ id: z.string().min(1).max(128) });

/** `GET /api/v1/gateway/routing` answer: the policy in effect; the cloud key is never shown. */
export const RoutingPolicyViewSchema = z.object({
  source: z.enum(['fleet-file', 'environment']),
  /** the tier `model: auto` starts from */
  defaultTier: RoutingTierSchema,
  /** models serving each tier; an empty list: the catalog models of that tier not listed under another tier */
  tierModels: z.object({ small: z.array(z.string()), medium: z.array(z.string()), large: z.array(z.string()) }),
  /** false: `auto` is the default tier (no classifier) */
  autoEnabled: z.boolean(),
  /** requests with tools or structured output start at this tier at least */
  toolsMinTier: RoutingTierSchema,
  /** prompts estimated longer (tokens) skip the tier; a tier without a limit uses the character thresholds */
  maxPromptTokens: z.object({ small: z.int().min(1).optional(), medium: z.int().min(1).optional(), large: z.int().min(1).optional() }),
  mediumPromptChars: z.int().min(0),
  largePromptChars: z.int().min(0),
  escalateOnFailure: z.boolean(),
  strictMinTier: z.boolean(),
  sessionAffinity: z.boolean(),
  deviceConcurrency: z.int().min(1),
  timeoutMs: z.int().min(1),
  maxAttempts: z.int().min(1),
  cloud: z
    .object({
      baseUrl: z.string(),
      /** the model asked of the endpoint; absent: the client's */
      model: z.string().optional(),
      timeoutMs: z.int().min(1),
      apiKeySet: z.boolean(),
    })
    .nullable(),
});
export type RoutingPolicyView = z.infer<typeof RoutingPolicyViewSchema>;

/** Live per-model or per-device counters of the gateway since start. */
export const GatewayCountersSchema = z.object({
  requests: z.int().min(0),
  successes: z.int().min(0),
  failures: z.int().min(0),
  retries: z.int().min(0),
  tokensIn: z.int().min(0),
  tokensOut: z.int().min(0),
  latencySumMs: z.number().min(0),
});
export type GatewayCounters = z.infer<typeof GatewayCountersSchema>;

/** One device's load as the balancer sees it. */
export const DeviceLoadSchema = z.object({
  outstanding: z.int().min(0),
  served: z.int().min(0),
  /** tokens per second, rounded */
  speed: z.number().min(0),
  coolingDown: z.boolean(),
});
export type DeviceLoad = z.infer<typeof DeviceLoadSchema>;

/** `GET /api/v1/gateway/stats` answer (live, in memory, since start). */
export const GatewayStatsSchema = z.object({
  inFlight: z.int().min(0),
  queued: z.int().min(0),
  /** model -> devices that can take its work now */
  replicas: z.record(z.string(), z.array(z.string())),
  devices: z.record(z.string(), DeviceLoadSchema),
  byModel: z.record(z.string(), GatewayCountersSchema),
  byDevice: z.record(z.string(), GatewayCountersSchema),
});
export type GatewayStats = z.infer<typeof GatewayStatsSchema>;

/** `GET /v1/models` answer (OpenAI's list): the virtual models and the catalog's, as the key may use them. */
export const OpenAiModelListSchema = z.object({
  object: z.literal('list'),
  data: z.array(z.object({ id: z.string(), object: z.literal('model'), created: z.int().min(0), owned_by: z.string() })),
});
export type OpenAiModelList = z.infer<typeof OpenAiModelListSchema>;

/** OpenAI's error shape, for every `/v1` error (and the one error event that ends a stream). */
export const OpenAiErrorBodySchema = z.object({
  error: z.object({ message: z.string(), type: z.string(), param: z.string().nullable(), code: z.string() }),
});
export type OpenAiErrorBody = z.infer<typeof OpenAiErrorBodySchema>;

// OpenAI accepts content as a string or an array of parts; devices take text, so text parts are joined.
const TextContent = z.union([
  z.string(),
  z.array(z.object({ type: z.literal('text'), text: z.string() })).transform((parts) => parts.map((p) => p.text).join('')),
]);

const ToolCallIn = z.object({
  id: z.string().min(1).max(128),
  type: z.literal('function'),
  function: z.object({ name: z.string().min(1).max(64), arguments: z.string() }),
});

const MessageIn = z.discriminatedUnion('role', [
  z.object({ role: z.enum(['system', 'developer']), content: TextContent }),
  z.object({ role: z.literal('user'), content: TextContent, name: z.string().min(1).max(256).optional() }),
  z.object({ role: z.literal('assistant'), content: TextContent.nullish(), tool_calls: z.array(ToolCallIn).max(64).optional() }),
  z.object({ role: z.literal('tool'), tool_call_id: z.string().min(1).max(128), content: TextContent }),
]);

/** `POST /v1/chat/completions` body: the OpenAI fields the fleet serves; unknown fields are ignored. */
export const ChatCompletionRequestSchema = z.object({
  model: z.string().min(1).max(128),
  messages: z.array(MessageIn).min(1),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  tools: z.array(ToolSchema).max(128).nullish(),
  tool_choice: ToolChoiceSchema.nullish(),
  response_format: ResponseFormatSchema.nullish(),
  max_tokens: z.int().min(1).max(1_048_576).nullish(),
  max_completion_tokens: z.int().min(1).max(1_048_576).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.int().nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish(),
  user: z.string().max(256).nullish(),
  n: z.literal(1).nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

export const OpenAiUsageSchema = z.object({ prompt_tokens: z.int().min(0), completion_tokens: z.int().min(0), total_tokens: z.int().min(0) });
export type OpenAiUsage = z.infer<typeof OpenAiUsageSchema>;

/** `POST /v1/chat/completions` answer without `stream`. */
export const ChatCompletionSchema = z.object({
  id: z.string(),
  object: z.literal('chat.completion'),
  created: z.int().min(0),
  model: z.string(),
  system_fingerprint: z.null(),
  choices: z.array(
    z.object({
      index: z.int().min(0),
      message: z.object({
        role: z.literal('assistant'),
        content: z.string().nullable(),
        refusal: z.null(),
        tool_calls: z.array(ToolCallSchema).optional(),
      }),
      logprobs: z.null(),
      finish_reason: FinishReasonSchema,
    }),
  ),
  usage: OpenAiUsageSchema,
});
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;

export const ChatCompletionChunkDeltaSchema = z.object({
  role: z.literal('assistant').optional(),
  content: z.string().optional(),
  tool_calls: z.array(ToolCallDeltaSchema).optional(),
});
export type ChatCompletionChunkDelta = z.infer<typeof ChatCompletionChunkDeltaSchema>;

/**
 * One `data:` event of a streamed answer (`stream: true`, `text/event-stream`): deltas, then a chunk with the
 * `finish_reason`, then (with `stream_options.include_usage`) a chunk with no choices and the usage, then `[DONE]`.
 */
export const ChatCompletionChunkSchema = z.object({
  id: z.string(),
  object: z.literal('chat.completion.chunk'),
  created: z.int().min(0),
  model: z.string(),
  system_fingerprint: z.null(),
  choices: z.array(
    z.object({ index: z.int().min(0), delta: ChatCompletionChunkDeltaSchema, logprobs: z.null(), finish_reason: FinishReasonSchema.nullable() }),
  ),
  usage: OpenAiUsageSchema.optional(),
});
export type ChatCompletionChunk = z.infer<typeof ChatCompletionChunkSchema>;
