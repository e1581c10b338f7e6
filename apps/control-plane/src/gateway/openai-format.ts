import { HttpException } from '@nestjs/common';
import {
  ChatCompletionRequestSchema,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionChunkDelta,
  type ChatMessage,
  type FinishReason,
  type OpenAiErrorBody,
  type OpenAiUsage,
  type ResponseFormat,
  type Tool,
  type ToolCall,
  type ToolChoice,
} from '@flotilla/protocol';

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

function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 504) return 'timeout_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

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
  const parsed = ChatCompletionRequestSchema.safeParse(body);
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

export function openAiUsage(u: Usage): OpenAiUsage {
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
}): ChatCompletion {
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

export function chunkBody(id: string, created: number, model: string, delta: ChatCompletionChunkDelta, finishReason: FinishReason | null = null): ChatCompletionChunk {
  return {
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    system_fingerprint: null,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
  };
}

export function usageChunkBody(id: string, created: number, model: string, usage: Usage): ChatCompletionChunk {
  return { id, object: 'chat.completion.chunk', created, model, system_fingerprint: null, choices: [], usage: openAiUsage(usage) };
}
