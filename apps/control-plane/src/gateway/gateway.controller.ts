import { randomUUID } from 'node:crypto';
import { Controller, Get, HttpCode, Inject, Param, Post, Req, Res } from '@nestjs/common';
import {
  ChatCompletionChunkSchema,
  ChatCompletionRequestSchema,
  ChatCompletionSchema,
  GatewayStatsSchema,
  OpenAiErrorBodySchema,
  OpenAiModelListSchema,
  RequestRecordParamsSchema,
  RequestRecordSchema,
  RoutingPolicyViewSchema,
  type GatewayStats,
  type OpenAiModelList,
  type RequestRecordView,
  type RoutingPolicyView,
} from '@flotilla/protocol';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { LOGGER } from '../platform/tokens.js';
import { Public, RequireRole } from '../identity/auth/auth.guard.js';
import { notFound } from '../platform/common/app-error.js';
import { parseInput } from '../platform/common/parse.js';
import { ApiDoc } from '../platform/openapi/api-doc.js';
import { SseConnection } from '../platform/sse/sse-connection.js';
import { GatewayAccounting } from './accounting.js';
import { DeviceDirectory } from './device-directory.js';
import { Dispatcher } from './dispatcher.js';
import { GatewayKeys } from './gateway-keys.js';
import { GATEWAY_SETTINGS, type GatewaySettings } from './gateway.settings.js';
import { GatewayService, StreamFailure, type AnswerInfo } from './gateway.service.js';
import { GatewayError, chunkBody, completionBody, parseChatBody, usageChunkBody } from './openai-format.js';
import { VIRTUAL_MODELS } from './router.js';
import { GatewayRouting, policyView } from './routing-policy.js';

/**
 * The OpenAI-compatible API under `/v1`. `@Public()` for the admin guard: gateway keys (scope `gateway`) are checked
 * here, and every error has OpenAI's shape.
 */
@Controller()
export class GatewayController {
  constructor(
    private readonly gateway: GatewayService,
    private readonly keys: GatewayKeys,
    private readonly dispatcher: Dispatcher,
    private readonly directory: DeviceDirectory,
    private readonly accounting: GatewayAccounting,
    private readonly routing: GatewayRouting,
    @Inject(GATEWAY_SETTINGS) private readonly settings: GatewaySettings,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  @Public()
  @Get('v1/models')
  @ApiDoc({
    summary: 'OpenAI-compatible: the models this gateway key may use (the virtual auto/small/medium/large and the catalog)',
    tags: ['openai'],
    auth: 'gateway-key',
    response: OpenAiModelListSchema,
    errorBody: OpenAiErrorBodySchema,
  })
  async models(@Req() request: FastifyRequest, @Res() reply: FastifyReply): Promise<void> {
    try {
      const key = await this.keys.authenticate(request.headers.authorization);
      const names = [...VIRTUAL_MODELS.map((name) => ({ name, created: 0 })), ...(await this.gateway.modelNames())].filter((m) =>
        this.keys.allows(key, m.name),
      );
      const list: OpenAiModelList = { object: 'list', data: names.map((m) => ({ id: m.name, object: 'model', created: m.created, owned_by: 'flotilla' })) };
      await reply.send(list);
    } catch (error) {
      await this.sendError(reply, error);
    }
  }

  @Public()
  @Post('v1/chat/completions')
  // OpenAI answers 200, not Nest's default 201 for POST.
  @HttpCode(200)
  @ApiDoc({
    summary: 'OpenAI-compatible chat completion, answered by a device of the fleet (or the cloud fallback)',
    description:
      'Without `stream` the answer is one JSON chat.completion. With `stream: true` it is `text/event-stream`: ' +
      'chat.completion.chunk events, a last chunk with `finish_reason`, a usage chunk with `stream_options.include_usage`, ' +
      'then `data: [DONE]`; an error after the first chunk arrives as one `data:` event with the error body. Headers: ' +
      '`x-request-id` (see GET /api/v1/requests/{id}), `x-flotilla-model`, `x-flotilla-device`, `x-flotilla-route`.',
    tags: ['openai'],
    auth: 'gateway-key',
    body: ChatCompletionRequestSchema,
    response: ChatCompletionSchema,
    streamResponse: ChatCompletionChunkSchema,
    errorBody: OpenAiErrorBodySchema,
    errors: [403, 404, 429, 502, 503, 504],
  })
  async chatCompletions(@Req() request: FastifyRequest, @Res() reply: FastifyReply): Promise<void> {
    const requestId = `req_${randomUUID().replaceAll('-', '')}`;
    void reply.header('x-request-id', requestId);
    const aborter = new AbortController();
    // The response socket closing before we finished = the client went away: cancel the device job. [P-3.8]
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) aborter.abort();
    });
    // The streamed answer, once a device answered: the error path below ends it.
    let sse: SseConnection | undefined;
    try {
      const key = await this.keys.authenticate(request.headers.authorization);
      await this.keys.takeRate(key);
      const chat = parseChatBody(request.body);
      if (chat.messages.length > this.settings.maxMessages) {
        throw new GatewayError(400, 'invalid_request_error', `at most ${this.settings.maxMessages} messages per request, got ${chat.messages.length}`, {}, 'messages');
      }
      if (!this.keys.allows(key, chat.requestedModel)) {
        throw new GatewayError(403, 'model_not_allowed', `this API key may not use the model \`${chat.requestedModel}\``, {}, 'model');
      }
      const created = Math.floor(Date.now() / 1000);
      const id = `chatcmpl-${requestId.slice(4)}`;
      if (!chat.stream) {
        const out = await this.gateway.chat(chat, { requestId, key, signal: aborter.signal });
        this.answerHeaders(reply, out, out.route);
        await reply.send(
          completionBody({ id, created, model: out.model, content: out.content, toolCalls: out.toolCalls, finishReason: out.finishReason, usage: out.usage }),
        );
        return;
      }
      let model = chat.requestedModel;
      const raw = reply.raw;
      let answered = false;
      const send = (data: unknown) => sse?.send({ data });
      const out = await this.gateway.chat(
        chat,
        { requestId, key, signal: aborter.signal },
        {
          begin: (info) => {
            model = info.model;
            reply.hijack();
            raw.writeHead(200, {
              'content-type': 'text/event-stream; charset=utf-8',
              'cache-control': 'no-cache',
              connection: 'keep-alive',
              'x-accel-buffering': 'no',
              'x-request-id': requestId,
              ...this.headerValues(info),
            });
            // OpenAI's data-only stream: heartbeats as comments, which its clients skip.
            sse = new SseConnection(raw, this.settings.streamHeartbeatMs, 'comment');
            // Cut for not reading (the writer's size cap) is gone too, like a closed socket: cancel the device job.
            sse.onClose(() => {
              if (!answered) aborter.abort();
            });
            send(chunkBody(id, created, model, { role: 'assistant', content: '' }));
          },
          content: (delta) => send(chunkBody(id, created, model, { content: delta })),
          toolCalls: (deltas) => send(chunkBody(id, created, model, { tool_calls: deltas })),
        },
      );
      answered = true;
      send(chunkBody(id, created, model, {}, out.finishReason));
      if (chat.includeUsage) send(usageChunkBody(id, created, model, out.usage));
      sse?.sendLiteral('[DONE]');
      sse?.close();
    } catch (error) {
      if (sse || error instanceof StreamFailure) {
        const e = error instanceof StreamFailure ? error.error : toGatewayError(error);
        // One error event ends the stream; OpenAI clients raise it as an APIError. [issue 5: failover]
        sse?.send({ data: e.body });
        sse?.close();
        return;
      }
      await this.sendError(reply, error);
    }
  }

  /** One recorded request with every attempt (device, start, end, why it ended, tokens, continuation). */
  @RequireRole('viewer')
  @Get('api/v1/requests/:id')
  @ApiDoc({
    summary: 'One recorded gateway request (the x-request-id of its answer) with every attempt: device, start, end, why it ended, tokens, continuation',
    tags: ['gateway'],
    params: RequestRecordParamsSchema,
    response: RequestRecordSchema,
    errors: [404],
  })
  async requestRecord(@Param() params: unknown): Promise<RequestRecordView> {
    const { id } = parseInput(RequestRecordParamsSchema, params);
    await this.accounting.flush(); // a request that just ended may still wait in the write batch
    const row = await this.accounting.find(id);
    if (!row) throw notFound(`request ${id}`);
    return row;
  }

  /** The routing policy in effect: the fleet file's `routing` block over the FLOTILLA_GATEWAY_* settings. */
  @RequireRole('viewer')
  @Get('api/v1/gateway/routing')
  @ApiDoc({
    summary: 'The routing the gateway applies now (fleet file routing block, else FLOTILLA_GATEWAY_* settings); the cloud key is never shown',
    tags: ['gateway'],
    response: RoutingPolicyViewSchema,
  })
  routingPolicy(): RoutingPolicyView {
    return policyView(this.routing.current);
  }

  /** Requests and tokens per model and per device since start, outstanding work and queue (live, in memory). */
  @RequireRole('viewer')
  @Get('api/v1/gateway/stats')
  @ApiDoc({
    summary: 'Live gateway counters since start: per model and device, outstanding work, queue, ready replicas',
    tags: ['gateway'],
    response: GatewayStatsSchema,
  })
  stats(): GatewayStats {
    return {
      inFlight: this.dispatcher.inFlight,
      queued: this.gateway.balancer.queued,
      // Only devices that can take work now: one still reconnecting after a restart is not a ready replica.
      replicas: Object.fromEntries(
        [...this.directory.servedModels()].map((m): [string, string[]] => [m, this.directory.replicasOf(m)]).filter(([, devices]) => devices.length > 0),
      ),
      devices: this.gateway.balancer.snapshot(),
      byModel: Object.fromEntries(this.accounting.byModel),
      byDevice: Object.fromEntries(this.accounting.byDevice),
    };
  }

  private headerValues(info: AnswerInfo): Record<string, string> {
    // Every device whose text is in the answer, in order: a failover continues an answer on another device.
    const devices = info.devices && info.devices.length > 0 ? info.devices.join(',') : (info.deviceId ?? 'none');
    return { 'x-flotilla-model': info.model, 'x-flotilla-device': info.cloud ? 'cloud' : devices };
  }

  private answerHeaders(reply: FastifyReply, info: AnswerInfo, route: string): void {
    for (const [k, v] of Object.entries(this.headerValues(info))) void reply.header(k, v);
    void reply.header('x-flotilla-route', route.replace(/[^\x20-\x7e]/g, '?'));
  }

  private async sendError(reply: FastifyReply, error: unknown): Promise<void> {
    if (reply.sent || reply.raw.destroyed) return;
    const e = toGatewayError(error);
    if (e.getStatus() >= 500 && e.openaiCode === 'internal_error') this.logger.error({ err: error }, 'gateway error');
    for (const [k, v] of Object.entries(e.headers)) void reply.header(k, v);
    await reply.status(e.getStatus()).send(e.body);
  }
}


function toGatewayError(error: unknown): GatewayError {
  return error instanceof GatewayError ? error : new GatewayError(500, 'internal_error', 'internal error');
}
