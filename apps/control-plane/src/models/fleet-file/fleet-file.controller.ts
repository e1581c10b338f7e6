import { Body, Controller, Get, HttpCode, Post, Query, Req, Res } from '@nestjs/common';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import { actorOf } from '../catalog/catalog.controller.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { RoutingSchema, type Routing } from './fleet-file.js';
import { FleetService, type ApplyResult } from './fleet-file.service.js';

const flag = z
  .union([z.boolean(), z.enum(['true', 'false', '1', '0'])])
  .transform((v) => v === true || v === 'true' || v === '1')
  .optional();

const applyBody = z.strictObject({
  /** the fleet file's text (YAML or JSON) */
  yaml: z.string().min(1, 'the fleet file is empty').max(1024 * 1024),
  dryRun: flag,
  prune: flag,
});
const applyQuery = z.object({ dryRun: flag, prune: flag });

const applyResultSchema = z.object({
  dryRun: z.boolean(),
  changed: z.boolean().describe('false: the control plane already matched the file'),
  summary: z.string(),
  changes: z.array(
    z.object({
      kind: z.enum(['model', 'deployment', 'routing', 'metadata']),
      name: z.string(),
      action: z.enum(['create', 'update', 'delete', 'unchanged']),
      fields: z.array(z.string()).optional(),
    }),
  ),
});

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
    body: applyBody,
    query: applyQuery,
    response: applyResultSchema,
  })
  apply(@Body() body: unknown, @Query() query: unknown, @Req() request: AuthedRequest): Promise<ApplyResult> {
    const b = parseInput(applyBody, body);
    const q = parseInput(applyQuery, query);
    return this.fleet.apply(b.yaml, { dryRun: b.dryRun ?? q.dryRun ?? false, prune: b.prune ?? q.prune ?? false }, actorOf(request));
  }

  /** The current state as a fleet file (YAML). */
  @RequireRole('viewer')
  @Get('export')
  @ApiDoc({ summary: 'The current models, deployments and routing as a fleet file (YAML)', tags: ['fleet'], produces: 'text/plain' })
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
