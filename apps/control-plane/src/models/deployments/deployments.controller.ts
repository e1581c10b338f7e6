import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import {
  DeploymentInputSchema,
  DeploymentPageSchema,
  DeploymentPatchSchema,
  DeploymentRefParamsSchema,
  DeploymentRolloutSchema,
  DeploymentScaleSchema,
  DeploymentSchema,
  PageQuerySchema,
  type DeploymentView,
  type DeploymentWithStatus,
  type Page,
} from '@flotilla/protocol';
import { actorOf } from '../catalog/catalog.controller.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { PlacementService } from '../placement/placement.service.js';
import { DeploymentsService } from './deployments.service.js';

/** Deployments: viewers read, operators change. `:ref` is a deployment id or name. */
@Controller('api/v1/deployments')
export class DeploymentsController {
  constructor(
    private readonly deployments: DeploymentsService,
    private readonly scheduler: PlacementService,
  ) {}

  @RequireRole('viewer')
  @Get()
  @ApiDoc({ summary: 'Deployments with their placement status', tags: ['deployments'], query: PageQuerySchema, response: DeploymentPageSchema })
  async list(@Query() query: unknown): Promise<Page<DeploymentWithStatus>> {
    const page = await this.deployments.list(parseInput(PageQuerySchema, query));
    return { ...page, items: page.items.map((d) => this.withStatus(d)) };
  }

  @RequireRole('viewer')
  @Get(':ref')
  @ApiDoc({ summary: 'One deployment', tags: ['deployments'], params: DeploymentRefParamsSchema, response: DeploymentSchema, errors: [404] })
  async get(@Param('ref') ref: string): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.get(ref));
  }

  @RequireRole('operator')
  @Post()
  @ApiDoc({ summary: 'Deploy a catalog model: replicas, label selector, optional pin to devices', tags: ['deployments'], body: DeploymentInputSchema, response: DeploymentSchema, errors: [404, 409] })
  async create(@Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.create(parseInput(DeploymentInputSchema, body), actorOf(request)));
  }

  @RequireRole('operator')
  @Patch(':ref')
  @ApiDoc({ summary: 'Change a deployment (a new model rolls out like POST rollout)', tags: ['deployments'], params: DeploymentRefParamsSchema, body: DeploymentPatchSchema, response: DeploymentSchema, errors: [404] })
  async update(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.update(ref, parseInput(DeploymentPatchSchema, body), actorOf(request)));
  }

  /** `{replicas}`: the scheduler adds or removes replicas (ready ones are kept on scale-down). */
  @RequireRole('operator')
  @Post(':ref/scale')
  @HttpCode(200)
  @ApiDoc({ summary: 'Set the replica count', tags: ['deployments'], params: DeploymentRefParamsSchema, body: DeploymentScaleSchema, response: DeploymentSchema, errors: [404] })
  async scale(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.scale(ref, parseInput(DeploymentScaleSchema, body).replicas, actorOf(request)));
  }

  /** `{model}`: rolls out another model; its replicas are ready before the old ones are removed. */
  @RequireRole('operator')
  @Post(':ref/rollout')
  @HttpCode(200)
  @ApiDoc({ summary: 'Roll out another model: new replicas are ready before old ones go', tags: ['deployments'], params: DeploymentRefParamsSchema, body: DeploymentRolloutSchema, response: DeploymentSchema, errors: [404] })
  async rollout(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.rollout(ref, parseInput(DeploymentRolloutSchema, body).model, actorOf(request)));
  }

  @RequireRole('operator')
  @Delete(':ref')
  @ApiDoc({ summary: 'Delete a deployment; its replicas are removed from the devices', tags: ['deployments'], params: DeploymentRefParamsSchema, response: DeploymentSchema, errors: [404] })
  async remove(@Param('ref') ref: string, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return { ...(await this.deployments.remove(ref, actorOf(request))), status: null };
  }

  private withStatus(d: DeploymentView): DeploymentWithStatus {
    const plan = this.scheduler.deploymentStatus(d.id);
    if (!plan) return { ...d, status: null };
    const { deploymentId: _id, name: _name, modelId: _modelId, ...status } = plan;
    return { ...d, status };
  }
}
