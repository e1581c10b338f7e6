import { Body, Controller, Delete, Get, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { z } from 'zod';
import { type AuthedRequest, RequireRole } from '../auth/auth.guard.js';
import { unauthorized } from '../common/app-error.js';
import { parseInput } from '../common/parse.js';
import type { Actor } from '../audit/audit.service.js';
import { CatalogService, MODEL_TIERS, ModelInputSchema, ModelPatchSchema, type ModelView } from './catalog.service.js';
import { PageQuerySchema, type Page } from './inputs.js';

const listQuery = PageQuerySchema.extend({ tier: z.enum(MODEL_TIERS).optional() });

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
  list(@Query() query: unknown): Promise<Page<ModelView>> {
    return this.catalog.list(parseInput(listQuery, query));
  }

  @RequireRole('viewer')
  @Get(':ref')
  get(@Param('ref') ref: string): Promise<ModelView> {
    return this.catalog.get(ref);
  }

  @RequireRole('operator')
  @Post()
  create(@Body() body: unknown, @Req() request: AuthedRequest): Promise<ModelView> {
    return this.catalog.create(parseInput(ModelInputSchema, body), actorOf(request));
  }

  @RequireRole('operator')
  @Patch(':ref')
  update(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<ModelView> {
    return this.catalog.update(ref, parseInput(ModelPatchSchema, body), actorOf(request));
  }

  @RequireRole('operator')
  @Delete(':ref')
  remove(@Param('ref') ref: string, @Req() request: AuthedRequest): Promise<ModelView> {
    return this.catalog.remove(ref, actorOf(request));
  }
}
