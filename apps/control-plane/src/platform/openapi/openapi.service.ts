import { HTTP_CODE_METADATA, METHOD_METADATA, PATH_METADATA } from '@nestjs/common/constants.js';
import { Injectable, RequestMethod } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { PUBLIC_KEY, REQUIRED_ROLE_KEY, type Role } from '../common/route-access.js';
import { API_DOC, type ApiDocOptions } from './api-doc.js';
import { buildOpenApiDocument, type DocumentedRoute, type OpenApiDocument } from './openapi-document.js';

type Handler = (...args: unknown[]) => unknown;

/** Builds (once) the OpenAPI document from every controller Nest knows. */
@Injectable()
export class OpenApiService {
  private document: OpenApiDocument | undefined;

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
  ) {}

  getDocument(): OpenApiDocument {
    this.document ??= buildOpenApiDocument(this.routes(), {
      title: 'Flotilla control plane',
      version: '1',
      description:
        'REST API of the Flotilla control plane. Errors share one body: {"error": {"code", "message", "type", "details"}}. ' +
        'Lists are paginated with `limit` and an opaque `cursor` (the response carries `nextCursor`, null on the last page).',
    });
    return this.document;
  }

  /** Every route declared by a controller: method, full path, access rule, success status and `@ApiDoc`. */
  routes(): DocumentedRoute[] {
    const routes: DocumentedRoute[] = [];
    for (const wrapper of this.discovery.getControllers()) {
      const controller = wrapper.metatype as (new (...args: never[]) => unknown) | null;
      if (!controller || !wrapper.instance) continue;
      const prefixes = asArray(Reflect.getMetadata(PATH_METADATA, controller) as string | string[] | undefined);
      const prototype = Object.getPrototypeOf(wrapper.instance) as Record<string, Handler>;
      for (const name of this.scanner.getAllMethodNames(prototype)) {
        const handler = prototype[name];
        if (typeof handler !== 'function') continue;
        const requestMethod = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
        if (requestMethod === undefined) continue;
        const paths = asArray(Reflect.getMetadata(PATH_METADATA, handler) as string | string[] | undefined);
        const isPublic = this.reflector.getAllAndOverride<boolean>(PUBLIC_KEY, [handler, controller]) ?? false;
        const role = this.reflector.getAllAndOverride<Role>(REQUIRED_ROLE_KEY, [handler, controller]) ?? 'admin';
        const methods = requestMethod === RequestMethod.ALL ? ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] : [RequestMethod[requestMethod]];
        const status = Reflect.getMetadata(HTTP_CODE_METADATA, handler) as number | undefined;
        for (const prefix of prefixes) {
          for (const path of paths) {
            for (const method of methods) {
              routes.push({
                method,
                path: joinPath(prefix, path),
                access: isPublic ? { kind: 'public' } : { kind: 'role', role },
                status: status ?? (method === 'POST' ? 201 : 200),
                handler: `${controller.name}.${name}`,
                doc: this.reflector.get<ApiDocOptions | undefined>(API_DOC, handler),
              });
            }
          }
        }
      }
    }
    return routes;
  }
}

function asArray(value: string | string[] | undefined): string[] {
  if (value === undefined) return [''];
  return Array.isArray(value) ? value : [value];
}

/** Nest's joining: `api/v1/auth` + `login` -> `/api/v1/auth/login`; `/` + `` -> `/`. */
export function joinPath(prefix: string, path: string): string {
  const parts = [prefix, path].map((p) => p.replace(/^\/+|\/+$/g, '')).filter(Boolean);
  return `/${parts.join('/')}`;
}
