import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { type AuthedRequest, RequireRole } from '../../identity/auth/auth.guard.js';
import { z } from 'zod';
import { actorOf } from '../catalog/catalog.controller.js';
import { PageQuerySchema, type Page } from '../catalog/inputs.js';
import { parseInput } from '../../platform/common/parse.js';
import { ApiDoc, pageSchema } from '../../platform/openapi/api-doc.js';
import type { DeploymentPlan } from '../placement/planner.js';
import { PlacementService } from '../placement/placement.service.js';
import {
  ACCELERATOR_NEEDS,
  DeploymentInputSchema,
  DeploymentPatchSchema,
  DeploymentsService,
  RolloutSchema,
  ScaleSchema,
  type DeploymentView,
} from './deployments.service.js';

const refParams = z.object({ ref: z.string().describe('deployment id or name') });

export const deploymentSchema = z.object({
  id: z.string(),
  name: z.string(),
  model: z.string(),
  modelId: z.string(),
  replicas: z.number(),
  labelSelector: z.record(z.string(), z.string()),
  pinnedDeviceIds: z.array(z.string()),
  contextSize: z.number().nullable(),
  parallel: z.number(),
  accelerator: z.enum(ACCELERATOR_NEEDS),
  createdAt: z.date(),
  updatedAt: z.date(),
  status: z
    .object({
      wanted: z.number(),
      placed: z.number(),
      deviceIds: z.array(z.string()),
      ready: z.number(),
      previous: z.number().describe('replicas of an earlier model still placed during a rollout'),
      rollingOut: z.boolean(),
      unsatisfied: z.object({ missing: z.number(), message: z.string(), devices: z.record(z.string(), z.number()) }).optional(),
    })
    .nullable()
    .describe("the scheduler's last run; null before it saw the deployment"),
});

/** A deployment with what the scheduler's last run made of it (null before the first run sees it). */
export type DeploymentWithStatus = DeploymentView & { status: Omit<DeploymentPlan, 'deploymentId' | 'name' | 'modelId'> | null };

/** Deployments: viewers read, operators change. `:ref` is a deployment id or name. */
@Controller('api/v1/deployments')
export class DeploymentsController {
  constructor(
    private readonly deployments: DeploymentsService,
    private readonly scheduler: PlacementService,
  ) {}

  @RequireRole('viewer')
  @Get()
  @ApiDoc({ summary: 'Deployments with their placement status', tags: ['deployments'], query: PageQuerySchema, response: pageSchema(deploymentSchema) })
  async list(@Query() query: unknown): Promise<Page<DeploymentWithStatus>> {
    const page = await this.deployments.list(parseInput(PageQuerySchema, query));
    return { ...page, items: page.items.map((d) => this.withStatus(d)) };
  }

  @RequireRole('viewer')
  @Get(':ref')
  @ApiDoc({ summary: 'One deployment', tags: ['deployments'], params: refParams, response: deploymentSchema, errors: [404] })
  async get(@Param('ref') ref: string): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.get(ref));
  }

  @RequireRole('operator')
  @Post()
  @ApiDoc({ summary: 'Deploy a catalog model: replicas, label selector, optional pin to devices', tags: ['deployments'], body: DeploymentInputSchema, response: deploymentSchema, errors: [404, 409] })
  async create(@Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.create(parseInput(DeploymentInputSchema, body), actorOf(request)));
  }

  @RequireRole('operator')
  @Patch(':ref')
  @ApiDoc({ summary: 'Change a deployment (a new model rolls out like POST rollout)', tags: ['deployments'], params: refParams, body: DeploymentPatchSchema, response: deploymentSchema, errors: [404] })
  async update(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.update(ref, parseInput(DeploymentPatchSchema, body), actorOf(request)));
  }

  /** `{replicas}`: the scheduler adds or removes replicas (ready ones are kept on scale-down). */
  @RequireRole('operator')
  @Post(':ref/scale')
  @HttpCode(200)
  @ApiDoc({ summary: 'Set the replica count', tags: ['deployments'], params: refParams, body: ScaleSchema, response: deploymentSchema, errors: [404] })
  async scale(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.scale(ref, parseInput(ScaleSchema, body).replicas, actorOf(request)));
  }

  /** `{model}`: rolls out another model; its replicas are ready before the old ones are removed. */
  @RequireRole('operator')
  @Post(':ref/rollout')
  @HttpCode(200)
  @ApiDoc({ summary: 'Roll out another model: new replicas are ready before old ones go', tags: ['deployments'], params: refParams, body: RolloutSchema, response: deploymentSchema, errors: [404] })
  async rollout(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.rollout(ref, parseInput(RolloutSchema, body).model, actorOf(request)));
  }

  @RequireRole('operator')
  @Delete(':ref')
  @ApiDoc({ summary: 'Delete a deployment; its replicas are removed from the devices', tags: ['deployments'], params: refParams, response: deploymentSchema, errors: [404] })
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
