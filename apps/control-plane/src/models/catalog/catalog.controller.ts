import { Body, Controller, Delete, Get, Param, Patch, Post, Query, Req } from '@nestjs/common';
import {
  ModelInputSchema,
  ModelListQuerySchema,
  ModelPageSchema,
  ModelPatchSchema,
  ModelRefParamsSchema,
  ModelSchema,
  type ModelView,
  type Page,
} from '@flotilla/protocol';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import { unauthorized } from '../../platform/common/app-error.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Actor } from '../../identity/audit/audit.service.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { CatalogService } from './catalog.service.js';

export function actorOf(request: AuthedRequest): Actor {
  if (!request.principal) throw unauthorized();
  return request.principal.actor;
}

/** The model catalog: viewers read, operators change. `:ref` is a model id or name. */
@Controller('api/v1/models')
export class CatalogController {
  constructor(private readonly catalog: CatalogService) {}

  @RequireRole('viewer')
  @Get()
  @ApiDoc({ summary: 'The model catalog, by name (filter by tier)', tags: ['models'], query: ModelListQuerySchema, response: ModelPageSchema })
  list(@Query() query: unknown): Promise<Page<ModelView>> {
    return this.catalog.list(parseInput(ModelListQuerySchema, query));
  }

  @RequireRole('viewer')
  @Get(':ref')
  @ApiDoc({ summary: 'One model', tags: ['models'], params: ModelRefParamsSchema, response: ModelSchema, errors: [404] })
  get(@Param('ref') ref: string): Promise<ModelView> {
    return this.catalog.get(ref);
  }

  @RequireRole('operator')
  @Post()
  @ApiDoc({ summary: 'Add a model to the catalog (sizes in bytes or with units, e.g. "2.4GB")', tags: ['models'], body: ModelInputSchema, response: ModelSchema, errors: [409] })
  create(@Body() body: unknown, @Req() request: AuthedRequest): Promise<ModelView> {
    return this.catalog.create(parseInput(ModelInputSchema, body), actorOf(request));
  }

  @RequireRole('operator')
  @Patch(':ref')
  @ApiDoc({ summary: 'Change a model; devices holding it get a new desired state', tags: ['models'], params: ModelRefParamsSchema, body: ModelPatchSchema, response: ModelSchema, errors: [404, 409] })
  update(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<ModelView> {
    return this.catalog.update(ref, parseInput(ModelPatchSchema, body), actorOf(request));
  }

  @RequireRole('operator')
  @Delete(':ref')
  @ApiDoc({ summary: 'Remove a model (409 while a deployment uses it)', tags: ['models'], params: ModelRefParamsSchema, response: ModelSchema, errors: [404, 409] })
  remove(@Param('ref') ref: string, @Req() request: AuthedRequest): Promise<ModelView> {
    return this.catalog.remove(ref, actorOf(request));
  }
}
