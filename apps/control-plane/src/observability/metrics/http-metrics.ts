import { Injectable } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';

/** Buckets for HTTP latency in seconds: REST calls are ms; gateway calls (non-streamed) reach tens of seconds. */
const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * Request count and latency by route pattern and status, from a Fastify `onResponse` hook: it sees every answer,
 * guard rejections and 404s included. The route label is the pattern (`/api/v1/devices/:id`), never the raw URL, so
 * the series stay bounded; unmatched paths share `unmatched`, static dashboard files share `static`.
 */
@Injectable()
export class HttpMetrics {
  constructor(adapterHost: HttpAdapterHost, registry: MetricsRegistry) {
    const requests = registry.counter({
      name: 'flotilla_http_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status code.',
      labelNames: ['method', 'route', 'status'],
    });
    const duration = registry.histogram({
      name: 'flotilla_http_request_duration_seconds',
      help: 'HTTP request latency until the response was sent, by method and route pattern.',
      labelNames: ['method', 'route'],
      buckets: HTTP_BUCKETS,
    });
    const fastify = adapterHost.httpAdapter?.getInstance<FastifyInstance>();
    // Registered while Nest builds its providers, before any route is added: Fastify applies it to every route.
    fastify?.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
      const route = routeLabel(request);
      requests.inc({ method: request.method, route, status: reply.statusCode });
      duration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
      done();
    });
  }
}

export function routeLabel(request: FastifyRequest): string {
  const options = request.routeOptions;
  if (!options.url) return 'unmatched';
  const schema = options.schema as { hide?: boolean } | undefined;
  return schema?.hide ? 'static' : options.url;
}
