import { Controller, Get, Inject, Query, Req, Res } from '@nestjs/common';
import { ErrorCode, EventStreamQuerySchema, StreamEventSchema } from '@flotilla/protocol';
import type { FastifyReply } from 'fastify';
import { type AuthedRequest, Public, bearerOf } from '../../identity/auth/auth.guard.js';
import { AuthService } from '../../identity/auth/auth.service.js';
import { AppError } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { EventStreamHub } from './event-stream.hub.js';
import { SseConnection } from '../../platform/sse/sse-connection.js';
import { STREAM_SETTINGS, type StreamSettings } from './stream.settings.js';

/**
 * The live event stream for dashboards: Server-Sent Events of fleet changes. Public at the guard because EventSource
 * cannot set headers: the handler accepts the credential from `Authorization` or `?token=` and needs the viewer role.
 */
@Controller('api/v1/events')
export class StreamController {
  constructor(
    private readonly hub: EventStreamHub,
    private readonly auth: AuthService,
    @Inject(STREAM_SETTINGS) private readonly settings: StreamSettings,
  ) {}

  @Public()
  @Get('stream')
  @ApiDoc({
    summary: 'Live fleet events (Server-Sent Events): device, model, placement, alert and fleet-health changes',
    description:
      'Each event has `id: <boot>.<seq>`, `event: <type>` and `data: {"id","type","data","at"}`. A `heartbeat` event arrives ' +
      'every 15 s by default. Reconnecting with Last-Event-ID replays missed events, or sends `resync` when they are gone. ' +
      'The credential is checked again every minute; a logged-out or expired one gets an `unauthorized` event and the stream ends.',
    tags: ['events'],
    query: EventStreamQuerySchema.omit({ token: true }),
    response: StreamEventSchema,
    produces: 'text/event-stream',
    auth: 'bearer-or-query',
    role: 'viewer',
    errors: [429],
  })
  async stream(@Req() request: AuthedRequest, @Query() query: unknown, @Res() reply: FastifyReply): Promise<void> {
    const { types, token } = parseInput(EventStreamQuerySchema, query);
    const credential = bearerOf(request) ?? token;
    // Any role may watch (viewer is the least); authenticate() refuses gateway-only keys.
    await this.auth.authenticate(credential);
    const wanted = types ? new Set(types.split(',').map((t) => t.trim()).filter(Boolean)) : undefined;
    if (this.hub.size >= this.settings.maxClients) {
      throw new AppError(ErrorCode.RATE_LIMITED, 'too many open event streams', undefined, { 'retry-after': '5' });
    }

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // The socket ends with the stream: a kept-alive socket would hold the server open on shutdown.
      connection: 'close',
      // Proxies (nginx) must not buffer the stream.
      'x-accel-buffering': 'no',
    });
    res.socket?.setNoDelay(true);
    const connection = new SseConnection(res, this.settings.heartbeatMs);
    connection.retry(3000);
    connection.send({ event: 'ready', data: { at: new Date().toISOString(), lastEventId: this.hub.lastId ?? null } });
    const lastEventId = headerValue(request.headers['last-event-id']);
    this.hub.attach(connection, { ...(wanted ? { types: wanted } : {}), ...(lastEventId ? { lastEventId } : {}) });
    // A stream outlives its request: a session logged out, expired or revoked since then ends it.
    const recheck = setInterval(() => {
      this.auth.authenticate(credential).catch(() => {
        connection.send({ event: 'unauthorized', data: { reason: 'credentials expired or revoked' } });
        connection.close();
      });
    }, this.settings.reauthenticateMs);
    recheck.unref();
    connection.onClose(() => clearInterval(recheck));
  }
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
