import { Injectable } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { FastifyInstance, RouteOptions } from 'fastify';

export interface RegisteredRoute {
  method: string;
  /** Fastify's pattern, e.g. `/api/v1/devices/:id` */
  url: string;
}

/**
 * Every route Fastify actually serves, seen through its `onRoute` hook (added while Nest builds its providers, before
 * any route exists). Static dashboard files (`schema.hide`, as @fastify/static marks them) and HEAD twins are left
 * out. The OpenAPI test checks the document against this list.
 */
@Injectable()
export class RouteCatalog {
  private readonly routes: RegisteredRoute[] = [];

  constructor(adapterHost: HttpAdapterHost) {
    const fastify = adapterHost.httpAdapter?.getInstance<FastifyInstance>();
    fastify?.addHook('onRoute', (route: RouteOptions) => {
      if ((route.schema as { hide?: boolean } | undefined)?.hide) return;
      const methods = Array.isArray(route.method) ? route.method : [route.method];
      for (const method of methods) {
        if (method === 'HEAD' || method === 'OPTIONS') continue;
        this.routes.push({ method, url: route.url });
      }
    });
  }

  list(): RegisteredRoute[] {
    return [...this.routes];
  }
}
