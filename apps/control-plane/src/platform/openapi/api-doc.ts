import { SetMetadata } from '@nestjs/common';
import { z } from 'zod';
import type { Role } from '../common/route-access.js';

export const API_DOC = 'flotilla.apiDoc';

/**
 * How a route is described in the OpenAPI document (`GET /api/v1/openapi.json`). Put it next to the route decorator:
 *
 *   @RequireRole('viewer')
 *   @Get(':id')
 *   @ApiDoc({ summary: 'One device', params: deviceParams, response: deviceSchema, tags: ['devices'] })
 *
 * Method, path and role come from Nest's own metadata (`@Get`, `@Controller`, `@RequireRole`/`@Public`), so a route
 * without `@ApiDoc` still appears, only without schemas.
 */
export interface ApiDocOptions {
  summary: string;
  description?: string;
  tags?: string[];
  /** the zod schema the handler parses the body with */
  body?: z.ZodType;
  /** an object schema; each property becomes a query parameter */
  query?: z.ZodType;
  /** an object schema for the `:params` of the path (default: strings) */
  params?: z.ZodType;
  /** the success body (JSON) */
  response?: z.ZodType;
  /** default: `text/plain` for strings, else `application/json` */
  produces?: 'application/json' | 'text/plain' | 'text/event-stream';
  /** the `data:` of each event when the same route also answers as a stream (e.g. OpenAI's `stream: true`) */
  streamResponse?: z.ZodType;
  /**
   * For `@Public()` routes that check credentials themselves: `metrics-token` (optional static token), `bearer-or-query`
   * (a session in the header or `?token=`, for EventSource), `gateway-key` (an API key of scope `gateway`), with the
   * role they then need.
   */
  auth?: 'metrics-token' | 'bearer-or-query' | 'gateway-key';
  /** the error body when the route does not use the shared one (the OpenAI-compatible routes keep OpenAI's) */
  errorBody?: z.ZodType;
  role?: Role;
  /** extra documented error statuses, e.g. 404, 409, 429 */
  errors?: number[];
}

export const ApiDoc = (options: ApiDocOptions) => SetMetadata(API_DOC, options);

/** `{items, nextCursor}` around an item schema, for the OpenAPI document. */
export const pageSchema = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), nextCursor: z.string().nullable() });
