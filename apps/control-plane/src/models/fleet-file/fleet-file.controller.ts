import { Body, Controller, Get, HttpCode, Post, Query, Req, Res } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import {
  FleetApplyQuerySchema,
  FleetApplyRequestSchema,
  FleetApplyResultSchema,
  FleetExportSchema,
  RoutingSchema,
  type FleetApplyResult,
  type Routing,
} from '@flotilla/protocol';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import { actorOf } from '../catalog/catalog.controller.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { FleetService } from './fleet-file.service.js';

/** The fleet file over REST: `flotilla apply` and `flotilla export` call these. */
@Controller('api/v1/fleet')
export class FleetFileController {
  constructor(private readonly fleet: FleetService) {}

  /** Body `{yaml, dryRun?, prune?}` (also `?dryRun=true&prune=true`). Idempotent: a second apply reports no changes. */
  @RequireRole('operator')
  @Post('apply')
  @HttpCode(200)
  @ApiDoc({
    summary: 'Apply a fleet file (models, deployments, routing); idempotent, with a dry run and a diff',
    description: 'Invalid files are refused with 400; `error.details.issues` lists every problem with its line and column. See docs/fleet-file.md.',
    tags: ['fleet'],
    body: FleetApplyRequestSchema,
    query: FleetApplyQuerySchema,
    response: FleetApplyResultSchema,
  })
  apply(@Body() body: unknown, @Query() query: unknown, @Req() request: AuthedRequest): Promise<FleetApplyResult> {
    const b = parseInput(FleetApplyRequestSchema, body);
    const q = parseInput(FleetApplyQuerySchema, query);
    return this.fleet.apply(b.yaml, { dryRun: b.dryRun ?? q.dryRun ?? false, prune: b.prune ?? q.prune ?? false }, actorOf(request));
  }

  /** The current state as a fleet file (YAML). */
  @RequireRole('viewer')
  @Get('export')
  @ApiDoc({ summary: 'The current models, deployments and routing as a fleet file (YAML)', tags: ['fleet'], response: FleetExportSchema, produces: 'text/plain' })
  async export(@Res({ passthrough: true }) reply: FastifyReply): Promise<string> {
    void reply.header('content-type', 'application/yaml; charset=utf-8');
    return this.fleet.export();
  }

  /** The routing block the gateway follows (defaults until a fleet file sets it). */
  @RequireRole('viewer')
  @Get('routing')
  @ApiDoc({ summary: 'The routing block the gateway follows (defaults until a fleet file sets one)', tags: ['fleet'], response: RoutingSchema })
  routing(): Promise<Routing> {
    return this.fleet.routing();
  }
}
