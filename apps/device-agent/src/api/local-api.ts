import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChatMessageSchema, httpStatusFor, ResponseFormatSchema, ToolChoiceSchema, ToolSchema, type ErrorCode } from '@flotilla/protocol';
import { z } from 'zod';
import type { Logger } from '../logger.js';
import type { InferenceService } from '../inference/service.js';
import { InferenceFailure } from '../runtime/engine.js';
import type { JobResult } from '../runtime/runtime.js';

const MAX_BODY_BYTES = 1024 * 1024;
const LOCAL_PRIORITY = 5;
const LOCAL_TIMEOUT_MS = 300_000;

/** The subset of OpenAI's chat completion request the device serves (unknown fields are ignored, as OpenAI does). */
export const ChatCompletionRequestSchema = z.object({
  model: z.string().min(1).max(128),
  messages: z.array(ChatMessageSchema).min(1).max(512),
  tools: z.array(ToolSchema).max(128).optional(),
  tool_choice: ToolChoiceSchema.optional(),
  response_format: ResponseFormatSchema.optional(),
  max_tokens: z.int().min(1).optional(),
  max_completion_tokens: z.int().min(1).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  seed: z.int().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(8)]).optional(),
  stream: z.boolean().optional(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequestSchema>;

export type LocalApiOptions = { host: string; port: number; service: InferenceService; logger: Logger };

/**
 * OpenAI-compatible endpoint on the box itself (`/v1/models`, `/v1/chat/completions`, SSE streaming), served from
 * the local runtime so software on the box keeps working while the control plane is unreachable.
 */
export class LocalApi {
  private server: Server | undefined;

  constructor(private readonly options: LocalApiOptions) {}

  async start(): Promise<{ host: string; port: number }> {
    const server = createServer({ noDelay: true }, (req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        this.options.logger.error({ err: error }, 'local API request failed');
        if (!res.headersSent) sendError(res, 'INTERNAL', 'internal error');
        else res.end();
      });
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address() as AddressInfo;
    this.options.logger.info({ host: address.address, port: address.port }, 'local OpenAI-compatible API listening');
    return { host: address.address, port: address.port };
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method === 'GET' && path === '/v1/models') {
      const data = this.options.service.models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'flotilla-device' }));
      sendJson(res, 200, { object: 'list', data });
      return;
    }
    if (path === '/v1/chat/completions') {
      if (req.method !== 'POST') return sendError(res, 'INVALID_REQUEST', 'use POST', 405);
      return this.chat(req, res);
    }
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { ok: true });
    sendError(res, 'NOT_FOUND', `no route ${req.method} ${path}`);
  }

  private async chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (error) {
      return sendError(res, error instanceof BodyTooLarge ? 'PAYLOAD_TOO_LARGE' : 'MALFORMED_JSON', error instanceof Error ? error.message : 'bad body');
    }
    const parsed = ChatCompletionRequestSchema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return sendError(res, 'INVALID_REQUEST', `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
    }
    const request = parsed.data;
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const controller = new AbortController();
    // Only a client that goes away before the answer is complete cancels the job.
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    const stop = request.stop === undefined ? undefined : Array.isArray(request.stop) ? request.stop : [request.stop];
    const maxTokens = request.max_completion_tokens ?? request.max_tokens;
    const spec = {
      requestId: id,
      model: request.model,
      priority: LOCAL_PRIORITY,
      deadline: Date.now() + LOCAL_TIMEOUT_MS,
      signal: controller.signal,
      request: {
        messages: request.messages,
        ...(request.tools ? { tools: request.tools } : {}),
        ...(request.tool_choice ? { toolChoice: request.tool_choice } : {}),
        ...(request.response_format ? { responseFormat: request.response_format } : {}),
        ...(maxTokens === undefined ? {} : { maxTokens }),
        ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
        ...(request.top_p === undefined ? {} : { topP: request.top_p }),
        ...(request.seed === undefined ? {} : { seed: request.seed }),
        ...(stop ? { stop } : {}),
      },
    };

    if (!request.stream) {
      try {
        const result = await this.options.service.complete(spec, 'local');
        sendJson(res, 200, {
          id,
          object: 'chat.completion',
          created,
          model: request.model,
          choices: [{ index: 0, message: assistantMessage(result), finish_reason: result.finishReason, logprobs: null }],
          usage: usageOf(result),
        });
      } catch (error) {
        const failure = error instanceof InferenceFailure ? error : new InferenceFailure('INTERNAL', String(error));
        sendError(res, failure.code, failure.message);
      }
      return;
    }

    const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}): string =>
      `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: request.model, choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], ...extra })}\n\n`;
    let started = false;
    const begin = (): void => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      res.write(chunk({ role: 'assistant', content: '' }, null));
    };
    try {
      const result = await this.options.service.complete(
        {
          ...spec,
          onTextDelta: (text) => {
            begin();
            res.write(chunk({ content: text }, null));
          },
        },
        'local',
      );
      begin();
      if (result.toolCalls.length > 0) {
        const toolCalls = result.toolCalls.map((call, index) => ({ index, id: `call_${randomUUID()}`, type: 'function', function: { name: call.name, arguments: call.arguments } }));
        res.write(chunk({ tool_calls: toolCalls }, null));
      }
      res.write(chunk({}, result.finishReason, { usage: usageOf(result) }));
      res.end('data: [DONE]\n\n');
    } catch (error) {
      const failure = error instanceof InferenceFailure ? error : new InferenceFailure('INTERNAL', String(error));
      // Before the first byte the client gets a proper HTTP error; afterwards an error event ends the stream.
      if (!started) return sendError(res, failure.code, failure.message);
      res.write(`data: ${JSON.stringify({ error: { message: failure.message, type: failure.code, code: failure.code } })}\n\n`);
      res.end('data: [DONE]\n\n');
    }
  }
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new BodyTooLarge(`request body over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function assistantMessage(result: JobResult): Record<string, unknown> {
  const message: Record<string, unknown> = { role: 'assistant', content: result.content };
  if (result.toolCalls.length > 0) {
    message['tool_calls'] = result.toolCalls.map((call) => ({ id: `call_${randomUUID()}`, type: 'function', function: { name: call.name, arguments: call.arguments } }));
  }
  return message;
}

function usageOf(result: JobResult): Record<string, number> {
  return { prompt_tokens: result.promptTokens, completion_tokens: result.completionTokens, total_tokens: result.promptTokens + result.completionTokens };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** OpenAI's error body shape, with the protocol's code. */
function sendError(res: ServerResponse, code: ErrorCode, message: string, status = httpStatusFor(code)): void {
  sendJson(res, status, { error: { message, type: code === 'INVALID_REQUEST' || code === 'MALFORMED_JSON' ? 'invalid_request_error' : 'server_error', code } });
}
