import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, NotFoundException } from '@nestjs/common';
import type {} from '@fastify/static';
import { ErrorCode, type ErrorCode as ErrorCodeType } from '@flotilla/protocol';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ZodError } from 'zod';
import { AppError } from './app-error.js';

/** The one error body of the REST API and the gateway (OpenAI's shape, with our code). */
export interface ErrorBody {
  error: { code: ErrorCodeType; message: string; type: string; param?: string | null; details?: unknown };
}

const TYPE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  409: 'conflict_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
};

function codeForStatus(status: number): ErrorCodeType {
  if (status === 401) return ErrorCode.UNAUTHORIZED;
  if (status === 403) return ErrorCode.FORBIDDEN;
  if (status === 404) return ErrorCode.NOT_FOUND;
  if (status === 409) return ErrorCode.CONFLICT;
  if (status === 413) return ErrorCode.PAYLOAD_TOO_LARGE;
  if (status === 429) return ErrorCode.RATE_LIMITED;
  if (status >= 400 && status < 500) return ErrorCode.INVALID_REQUEST;
  return ErrorCode.INTERNAL;
}

export function errorBody(status: number, code: ErrorCodeType, message: string, details?: unknown): ErrorBody {
  return {
    error: { code, message, type: TYPE_BY_STATUS[status] ?? (status >= 500 ? 'server_error' : 'invalid_request_error'), ...(details === undefined ? {} : { details }) },
  };
}

/** Maps every thrown error to one body shape; internals never leak to the client. */
@Catch()
export class GlobalErrorFilter implements ExceptionFilter {
  constructor(
    private readonly logger: Logger,
    /** When set, unknown GET paths outside the APIs get the single-page app's index.html. */
    private readonly dashboardDir?: string,
  ) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const http = host.switchToHttp();
    const reply = http.getResponse<FastifyReply>();
    const request = http.getRequest<FastifyRequest>();
    if (this.dashboardDir && exception instanceof NotFoundException && request.method === 'GET' && !isApiPath(request.url)) {
      void reply.type('text/html').sendFile('index.html', this.dashboardDir);
      return;
    }
    let status = 500;
    let body: ErrorBody;
    if (exception instanceof AppError) {
      status = exception.status;
      body = errorBody(status, exception.code, exception.message, exception.details);
      for (const [k, v] of Object.entries(exception.headers ?? {})) void reply.header(k, v);
    } else if (exception instanceof ZodError) {
      status = 400;
      const first = exception.issues[0];
      const where = first && first.path.length ? `${first.path.join('.')}: ` : '';
      body = errorBody(status, ErrorCode.INVALID_REQUEST, `${where}${first?.message ?? 'invalid request'}`, {
        issues: exception.issues.map((i) => ({ path: i.path.join('.'), message: i.message })),
      });
    } else if (exception instanceof HttpException) {
      status = exception.getStatus();
      const response = exception.getResponse();
      if (typeof response === 'object' && response !== null && 'error' in response && typeof response.error === 'object') {
        body = response as ErrorBody;
      } else {
        const message = typeof response === 'string' ? response : exception.message;
        body = errorBody(status, codeForStatus(status), message);
      }
    } else if (isFastifyError(exception)) {
      status = exception.statusCode;
      const code = exception.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? ErrorCode.PAYLOAD_TOO_LARGE : codeForStatus(status);
      const message = exception.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || exception.name === 'SyntaxError'
        ? 'request body is not valid JSON'
        : exception.message;
      body = errorBody(status, code, message);
    } else {
      this.logger.error({ err: exception, url: request.url, method: request.method }, 'unhandled error');
      body = errorBody(500, ErrorCode.INTERNAL, 'internal error');
    }
    // The OpenAI-compatible routes answer OpenAI's error shape (OpenAiErrorBodySchema), whose `param` is never absent:
    // errors raised before their handler (malformed JSON, a body too large) come through here.
    if (isOpenAiPath(request.url)) body = { error: { ...body.error, param: body.error.param ?? null } };
    if (status >= 500) this.logger.warn({ status, code: body.error.code, url: request.url }, body.error.message);
    void reply.status(status).send(body);
  }
}

function isFastifyError(e: unknown): e is Error & { statusCode: number; code?: string } {
  if (!(e instanceof Error)) return false;
  const statusCode: unknown = (e as Error & { statusCode?: unknown }).statusCode;
  return typeof statusCode === 'number' && statusCode >= 400 && statusCode < 600;
}

function isOpenAiPath(url: string): boolean {
  return /^\/v1(\/|$|\?)/.test(url);
}

function isApiPath(url: string): boolean {
  const path = url.split('?')[0] ?? '/';
  return /^\/(api|v1|mqtt)(\/|$)/.test(path) || /^\/(healthz|readyz|metrics)$/.test(path);
}
