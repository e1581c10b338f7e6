import { ApiErrorBodySchema } from '@flotilla/protocol';
import { z } from 'zod';
import type { Role } from '../common/route-access.js';
import type { ApiDocOptions } from './api-doc.js';

/** A route as Nest declares it, with its access rule and optional documentation. */
export interface DocumentedRoute {
  /** upper case, e.g. `GET` */
  method: string;
  /** Fastify/Nest pattern, e.g. `/api/v1/devices/:id` */
  path: string;
  access: { kind: 'public' } | { kind: 'role'; role: Role };
  /** the success status (`@HttpCode`, else 201 for POST, 200 otherwise) */
  status: number;
  /** `Controller.method`, for operation ids */
  handler: string;
  doc: ApiDocOptions | undefined;
}

export interface OpenApiInfo {
  title: string;
  version: string;
  description?: string;
}

type JsonSchema = Record<string, unknown>;

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: OpenApiInfo;
  jsonSchemaDialect: string;
  tags: { name: string }[];
  paths: Record<string, Record<string, JsonSchema>>;
  components: { securitySchemes: Record<string, JsonSchema>; schemas: Record<string, JsonSchema>; responses: Record<string, JsonSchema> };
}

const DIALECT = 'https://json-schema.org/draft/2020-12/schema';

const ERROR_STATUS_TEXT: Record<number, string> = {
  400: 'Invalid request (validation errors name the field)',
  401: 'Missing, unknown or expired credentials',
  403: 'The caller\'s role does not allow this',
  404: 'Not found',
  409: 'Conflict with the current state',
  413: 'Request body too large',
  429: 'Rate limited; see Retry-After',
  503: 'Not ready',
};

/**
 * The OpenAPI 3.1 document of the REST API, built from the routes Nest registered. Request and response schemas come
 * from the same zod schemas the handlers parse with (`z.toJSONSchema`), so the document cannot drift from validation.
 */
export function buildOpenApiDocument(routes: readonly DocumentedRoute[], info: OpenApiInfo): OpenApiDocument {
  const paths: OpenApiDocument['paths'] = {};
  const tags = new Set<string>();
  const sorted = [...routes].sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  for (const route of sorted) {
    const { path, parameters: pathParameters } = openApiPath(route.path, route.doc?.params);
    const operation = buildOperation(route, pathParameters);
    for (const tag of (operation.tags as string[] | undefined) ?? []) tags.add(tag);
    paths[path] ??= {};
    (paths[path])[route.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info,
    jsonSchemaDialect: DIALECT,
    tags: [...tags].sort().map((name) => ({ name })),
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'A session token from POST /api/v1/auth/login (flt_ses_...) or an admin-scoped API key (flt_key_...).',
        },
        queryToken: { type: 'apiKey', in: 'query', name: 'token', description: 'The same credential as a query parameter, for EventSource.' },
        metricsToken: { type: 'http', scheme: 'bearer', description: 'FLOTILLA_METRICS_TOKEN, only when it is set.' },
        gatewayKey: { type: 'http', scheme: 'bearer', description: 'An API key of scope `gateway` (flt_key_...), for the OpenAI-compatible /v1 routes.' },
      },
      schemas: { Error: toJsonSchema(ApiErrorBodySchema.extend({ error: ApiErrorBodySchema.shape.error.extend({ type: z.string() }) }), 'output') },
      responses: Object.fromEntries(
        Object.entries(ERROR_STATUS_TEXT).map(([status, description]) => [
          `E${status}`,
          { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
        ]),
      ),
    },
  };
}

function buildOperation(route: DocumentedRoute, pathParameters: JsonSchema[]): JsonSchema {
  const doc = route.doc;
  const role = route.access.kind === 'role' ? route.access.role : doc?.role;
  const operation: JsonSchema = {
    operationId: operationId(route.handler),
    summary: doc?.summary ?? `${route.method} ${route.path}`,
    ...(doc?.description ? { description: doc.description } : {}),
    tags: doc?.tags?.length ? doc.tags : [defaultTag(route.path)],
    'x-required-role': role ?? 'public',
  };
  if (!doc) operation['x-undocumented'] = true;
  const parameters = [...pathParameters, ...queryParameters(doc?.query)];
  if (doc?.auth === 'bearer-or-query') {
    parameters.push({ name: 'token', in: 'query', required: false, schema: { type: 'string' }, description: 'Credential for EventSource (instead of the header).' });
  }
  if (parameters.length) operation.parameters = parameters;

  if (route.access.kind === 'role') operation.security = [{ bearer: [] }];
  else if (doc?.auth === 'bearer-or-query') operation.security = [{ bearer: [] }, { queryToken: [] }];
  else if (doc?.auth === 'metrics-token') operation.security = [{}, { metricsToken: [] }];
  else if (doc?.auth === 'gateway-key') operation.security = [{ gatewayKey: [] }];
  else operation.security = [];

  if (doc?.body) {
    operation.requestBody = { required: true, content: { 'application/json': { schema: toJsonSchema(doc.body, 'input') } } };
  }

  const responses: Record<string, JsonSchema> = {};
  const produces = doc?.produces ?? 'application/json';
  if (route.status === 204) {
    responses['204'] = { description: 'Done' };
  } else {
    const schema = doc?.response ? toJsonSchema(doc.response, 'output') : produces === 'application/json' ? {} : { type: 'string' };
    const content: JsonSchema = { [produces]: { schema } };
    if (doc?.streamResponse) content['text/event-stream'] = { schema: toJsonSchema(doc.streamResponse, 'output') };
    responses[String(route.status)] = { description: doc?.summary ?? 'Success', content };
  }
  const errors = new Set<number>(doc?.errors ?? []);
  if (doc?.body || doc?.query || route.method === 'POST' || route.method === 'PUT' || route.method === 'PATCH') errors.add(400);
  if (doc?.body) errors.add(413);
  if (route.access.kind === 'role' || doc?.auth) errors.add(401);
  if (route.access.kind === 'role' || doc?.role) errors.add(403);
  const errorBody = doc?.errorBody ? toJsonSchema(doc.errorBody, 'output') : undefined;
  for (const status of [...errors].sort()) {
    responses[String(status)] = errorBody
      ? { description: ERROR_STATUS_TEXT[status] ?? `Error ${status}`, content: { 'application/json': { schema: errorBody } } }
      : ERROR_STATUS_TEXT[status]
      ? { $ref: `#/components/responses/E${status}` }
      : { description: `Error ${status}`, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  }
  operation.responses = responses;
  return operation;
}

/** `/api/v1/devices/:id` -> `/api/v1/devices/{id}` with its path parameters. */
export function openApiPath(path: string, params?: z.ZodType): { path: string; parameters: JsonSchema[] } {
  const names: string[] = [];
  const converted = path.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => {
    names.push(name);
    return `{${name}}`;
  }).replace(/\*$/, '{wildcard}');
  if (converted.endsWith('{wildcard}')) names.push('wildcard');
  const properties = params ? objectProperties(toJsonSchema(params, 'input')) : {};
  return {
    path: converted,
    parameters: names.map((name) => ({ name, in: 'path', required: true, schema: properties[name] ?? { type: 'string' } })),
  };
}

function queryParameters(query: z.ZodType | undefined): JsonSchema[] {
  if (!query) return [];
  const schema = toJsonSchema(query, 'input');
  const required = new Set((schema.required as string[] | undefined) ?? []);
  return Object.entries(objectProperties(schema)).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: 'query',
      required: required.has(name) && !('default' in rest),
      schema: rest,
      ...(typeof description === 'string' ? { description } : {}),
    };
  });
}

function objectProperties(schema: JsonSchema): Record<string, JsonSchema> {
  return (schema.properties as Record<string, JsonSchema> | undefined) ?? {};
}

/** zod -> JSON Schema 2020-12; dates travel as ISO strings, transforms document their input (or output) side. */
export function toJsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const json = z.toJSONSchema(schema, {
    target: 'draft-2020-12',
    io,
    unrepresentable: 'any',
    override: (ctx) => {
      const def = (ctx.zodSchema as { _zod: { def: { type: string } } })._zod.def;
      if (def.type === 'date') {
        ctx.jsonSchema.type = 'string';
        ctx.jsonSchema.format = 'date-time';
      } else if (def.type === 'bigint') {
        ctx.jsonSchema.type = 'string';
        ctx.jsonSchema.pattern = '^-?[0-9]+$';
      }
    },
  }) as JsonSchema;
  delete json.$schema;
  return json;
}

function operationId(handler: string): string {
  const [controller = '', method = ''] = handler.split('.');
  const base = controller.replace(/Controller$/, '');
  return `${base.charAt(0).toLowerCase()}${base.slice(1)}${method.charAt(0).toUpperCase()}${method.slice(1)}`;
}

function defaultTag(path: string): string {
  const segments = path.split('/').filter(Boolean);
  return (segments[0] === 'api' ? segments[2] : segments[0]) ?? 'root';
}
