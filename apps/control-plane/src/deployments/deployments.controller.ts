import { Body, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { type AuthedRequest, RequireRole } from '../auth/auth.guard.js';
import { actorOf } from '../catalog/catalog.controller.js';
import { PageQuerySchema, type Page } from '../catalog/inputs.js';
import { parseInput } from '../common/parse.js';
import type { DeploymentPlan } from '../scheduler/planner.js';
import { SchedulerService } from '../scheduler/scheduler.service.js';
import {
  DeploymentInputSchema,
  DeploymentPatchSchema,
  DeploymentsService,
  RolloutSchema,
  ScaleSchema,
  type DeploymentView,
} from './deployments.service.js';

/** A deployment with what the scheduler's last run made of it (null before the first run sees it). */
export type DeploymentWithStatus = DeploymentView & { status: Omit<DeploymentPlan, 'deploymentId' | 'name' | 'modelId'> | null };

/** Deployments: viewers read, operators change. `:ref` is a deployment id or name. */
@Controller('api/v1/deployments')
export class DeploymentsController {
  constructor(
    private readonly deployments: DeploymentsService,
    private readonly scheduler: SchedulerService,
  ) {}

  @RequireRole('viewer')
  @Get()
  async list(@Query() query: unknown): Promise<Page<DeploymentWithStatus>> {
    const page = await this.deployments.list(parseInput(PageQuerySchema, query));
    return { ...page, items: page.items.map((d) => this.withStatus(d)) };
  }

  @RequireRole('viewer')
  @Get(':ref')
  async get(@Param('ref') ref: string): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.get(ref));
  }

  @RequireRole('operator')
  @Post()
  async create(@Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.create(parseInput(DeploymentInputSchema, body), actorOf(request)));
  }

  @RequireRole('operator')
  @Patch(':ref')
  async update(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.update(ref, parseInput(DeploymentPatchSchema, body), actorOf(request)));
  }

  /** `{replicas}`: the scheduler adds or removes replicas (ready ones are kept on scale-down). */
  @RequireRole('operator')
  @Post(':ref/scale')
  @HttpCode(200)
  async scale(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.scale(ref, parseInput(ScaleSchema, body).replicas, actorOf(request)));
  }

  /** `{model}`: rolls out another model; its replicas are ready before the old ones are removed. */
  @RequireRole('operator')
  @Post(':ref/rollout')
  @HttpCode(200)
  async rollout(@Param('ref') ref: string, @Body() body: unknown, @Req() request: AuthedRequest): Promise<DeploymentWithStatus> {
    return this.withStatus(await this.deployments.rollout(ref, parseInput(RolloutSchema, body).model, actorOf(request)));
  }

  @RequireRole('operator')
  @Delete(':ref')
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
