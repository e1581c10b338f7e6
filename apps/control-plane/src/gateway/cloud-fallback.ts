import OpenAI from 'openai';
import type { FinishReason, ToolCall } from '@flotilla/protocol';
import type { NormalizedChat, Usage } from './openai-format.js';
import type { GatewaySettings } from './gateway.settings.js';

export interface CloudAnswer {
  model: string;
  content: string | null;
  toolCalls: ToolCall[] | undefined;
  finishReason: FinishReason;
  usage: Usage;
}

/** Forwards a request the fleet cannot serve to a configured OpenAI-compatible endpoint, through the `openai` SDK. */
export class CloudFallback {
  private readonly client: OpenAI;

  constructor(private readonly settings: NonNullable<GatewaySettings['cloud']>) {
    this.client = new OpenAI({ baseURL: settings.baseUrl, apiKey: settings.apiKey, timeout: settings.timeoutMs, maxRetries: 1 });
  }

  /** The model asked of the endpoint for a request that named `requested`: the configured one, else the client's. */
  modelFor(requested: string): string {
    return this.settings.model ?? requested;
  }

  async complete(chat: NormalizedChat, signal: AbortSignal, onContent?: (delta: string) => void): Promise<CloudAnswer> {
    const model = this.modelFor(chat.requestedModel);
    const params = {
      model,
      messages: chat.messages as OpenAI.Chat.ChatCompletionMessageParam[],
      ...(chat.tools ? { tools: chat.tools as OpenAI.Chat.ChatCompletionTool[] } : {}),
      ...(chat.toolChoice ? { tool_choice: chat.toolChoice as OpenAI.Chat.ChatCompletionToolChoiceOption } : {}),
      ...(chat.responseFormat ? { response_format: chat.responseFormat as OpenAI.Chat.ChatCompletionCreateParams['response_format'] } : {}),
      ...(chat.maxTokens ? { max_tokens: chat.maxTokens } : {}),
      ...(chat.temperature !== undefined ? { temperature: chat.temperature } : {}),
      ...(chat.topP !== undefined ? { top_p: chat.topP } : {}),
      ...(chat.seed !== undefined ? { seed: chat.seed } : {}),
      ...(chat.stop ? { stop: chat.stop } : {}),
      ...(chat.user ? { user: chat.user } : {}),
    };
    if (onContent) {
      const stream = await this.client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } }, { signal });
      let content = '';
      let finishReason: FinishReason = 'stop';
      let usage: Usage = { promptTokens: 0, completionTokens: 0 };
      for await (const chunk of stream) {
        const choice = chunk.choices[0];
        const delta = choice?.delta?.content;
        if (delta) {
          content += delta;
          onContent(delta);
        }
        if (choice?.finish_reason) finishReason = toFinish(choice.finish_reason);
        if (chunk.usage) usage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
      }
      return { model: `cloud:${model}`, content, toolCalls: undefined, finishReason, usage };
    }
    const res = await this.client.chat.completions.create({ ...params, stream: false }, { signal });
    const choice = res.choices[0];
    const toolCalls = choice?.message.tool_calls?.filter((c) => c.type === 'function');
    return {
      model: `cloud:${res.model || model}`,
      content: choice?.message.content ?? null,
      toolCalls: toolCalls?.length ? toolCalls : undefined,
      finishReason: toFinish(choice?.finish_reason ?? 'stop'),
      usage: { promptTokens: res.usage?.prompt_tokens ?? 0, completionTokens: res.usage?.completion_tokens ?? 0 },
    };
  }
}

function toFinish(reason: string): FinishReason {
  return reason === 'length' || reason === 'tool_calls' ? reason : 'stop';
}
