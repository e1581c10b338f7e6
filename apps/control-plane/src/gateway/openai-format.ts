import { HttpException } from '@nestjs/common';
import type { ChatMessage, FinishReason, ResponseFormat, Tool, ToolCall, ToolCallDelta, ToolChoice } from '@flotilla/protocol';
import { ResponseFormatSchema, ToolChoiceSchema, ToolSchema } from '@flotilla/protocol';
import { z } from 'zod';

/** OpenAI's error shape: `{ error: { message, type, param, code } }`, with the status and extra headers. */
export class GatewayError extends HttpException {
  constructor(
    status: number,
    readonly openaiCode: string,
    message: string,
    readonly headers: Record<string, string> = {},
    param: string | null = null,
  ) {
    super({ error: { message, type: errorType(status), param, code: openaiCode } }, status);
  }

  get body(): OpenAiErrorBody {
    return this.getResponse() as OpenAiErrorBody;
  }
}

export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 504) return 'timeout_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

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
export const ChatCompletionBodySchema = z.object({
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
export type ChatCompletionBody = z.infer<typeof ChatCompletionBodySchema>;

/** The request after validation, in the protocol's terms. */
export interface NormalizedChat {
  requestedModel: string;
  messages: ChatMessage[];
  stream: boolean;
  includeUsage: boolean;
  tools: Tool[] | undefined;
  toolChoice: ToolChoice | undefined;
  responseFormat: ResponseFormat | undefined;
  maxTokens: number | undefined;
  temperature: number | undefined;
  topP: number | undefined;
  seed: number | undefined;
  stop: string[] | undefined;
  user: string | undefined;
}

export function parseChatBody(body: unknown): NormalizedChat {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new GatewayError(400, 'invalid_request_error', 'the request body must be a JSON object');
  }
  const parsed = ChatCompletionBodySchema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const param = issue?.path.join('.') ?? null;
    throw new GatewayError(400, 'invalid_request_error', `${param ? `${param}: ` : ''}${issue?.message ?? 'invalid request'}`, {}, param);
  }
  const b = parsed.data;
  const messages: ChatMessage[] = b.messages.map((m): ChatMessage => {
    switch (m.role) {
      case 'system':
      case 'developer':
        return { role: 'system', content: m.content };
      case 'user':
        return m.name ? { role: 'user', content: m.content, name: m.name } : { role: 'user', content: m.content };
      case 'assistant':
        return m.tool_calls?.length ? { role: 'assistant', content: m.content ?? null, tool_calls: m.tool_calls } : { role: 'assistant', content: m.content ?? null };
      case 'tool':
        return { role: 'tool', tool_call_id: m.tool_call_id, content: m.content };
    }
  });
  return {
    requestedModel: b.model,
    messages,
    stream: b.stream === true,
    includeUsage: b.stream_options?.include_usage === true,
    tools: b.tools?.length ? b.tools : undefined,
    toolChoice: b.tool_choice ?? undefined,
    responseFormat: b.response_format ?? undefined,
    maxTokens: b.max_completion_tokens ?? b.max_tokens ?? undefined,
    temperature: b.temperature ?? undefined,
    topP: b.top_p ?? undefined,
    seed: b.seed ?? undefined,
    stop: b.stop === undefined || b.stop === null ? undefined : Array.isArray(b.stop) ? b.stop : [b.stop],
    user: b.user ?? undefined,
  };
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

export function openAiUsage(u: Usage) {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}

export function completionBody(args: {
  id: string;
  created: number;
  model: string;
  content: string | null;
  toolCalls: ToolCall[] | undefined;
  finishReason: FinishReason;
  usage: Usage;
}) {
  return {
    id: args.id,
    object: 'chat.completion',
    created: args.created,
    model: args.model,
    system_fingerprint: null,
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: args.content, refusal: null, ...(args.toolCalls?.length ? { tool_calls: args.toolCalls } : {}) },
        logprobs: null,
        finish_reason: args.finishReason,
      },
    ],
    usage: openAiUsage(args.usage),
  };
}

export interface ChunkDelta {
  role?: 'assistant';
  content?: string;
  tool_calls?: ToolCallDelta[];
}

export function chunkBody(id: string, created: number, model: string, delta: ChunkDelta, finishReason: FinishReason | null = null) {
  return {
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    system_fingerprint: null,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

export function usageChunkBody(id: string, created: number, model: string, usage: Usage) {
  return { id, object: 'chat.completion.chunk', created, model, system_fingerprint: null, choices: [], usage: openAiUsage(usage) };
}
