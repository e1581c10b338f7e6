import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode, type DeploymentInput, type DeploymentPatch, type DeploymentView, type Page, type PageQuery } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../../identity/audit/audit.service.js';
import { prismaCode, toPage } from '../catalog/inputs.js';
import { AppError, notFound } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { Deployment, Model, Prisma } from '../../generated/prisma/client.js';

type DeploymentRow = Deployment & { model: Pick<Model, 'name'> };

export function deploymentView(row: DeploymentRow): DeploymentView {
  return {
    id: row.id,
    name: row.name,
    model: row.model.name,
    modelId: row.modelId,
    replicas: row.replicas,
    labelSelector: (row.labelSelector ?? {}) as Record<string, string>,
    pinnedDeviceIds: row.pinnedDeviceIds,
    contextSize: row.contextSize,
    parallel: row.parallel,
    accelerator: row.accelerator,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** What operators declare: "model X, N replicas, on devices with labels Y". The scheduler does the rest. */
@Injectable()
export class DeploymentsService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly audit: AuditService,
    private readonly events: FleetEvents,
  ) {}

  async list(page: PageQuery): Promise<Page<DeploymentView>> {
    const rows = await this.db.prisma.deployment.findMany({
      include: { model: { select: { name: true } } },
      take: page.limit + 1,
      ...(page.cursor ? { cursor: { id: page.cursor } } : {}),
      orderBy: [{ name: 'asc' }, { id: 'asc' }],
    });
    return toPage(rows, page.limit, deploymentView);
  }

  async get(ref: string): Promise<DeploymentView> {
    return deploymentView(await this.find(ref));
  }

  async create(input: DeploymentInput, actor: Actor, tx?: Prisma.TransactionClient): Promise<DeploymentView> {
    const row = await this.inTx(tx, async (t) => {
      const model = await modelByRef(t, input.model);
      const { model: _model, ...rest } = input;
      const created = await t.deployment
        .create({ data: { ...rest, modelId: model.id }, include: { model: { select: { name: true } } } })
        .catch((error: unknown) => {
          throw prismaCode(error) === 'P2002' ? new AppError(ErrorCode.CONFLICT, `a deployment named ${input.name} already exists`) : error;
        });
      await this.audit.record(actor, 'deployment.create', `deployment:${created.id}`, { name: created.name, model: model.name, replicas: created.replicas }, t);
      return created;
    });
    if (!tx) this.events.emit('deployment.changed', { deploymentId: row.id, action: 'created' });
    return deploymentView(row);
  }

  /** Any field; a new model starts a rollout (new replicas become ready before old ones go). */
  async update(ref: string, patch: DeploymentPatch, actor: Actor, action = 'deployment.update', tx?: Prisma.TransactionClient): Promise<DeploymentView> {
    const row = await this.inTx(tx, async (t) => {
      const current = await this.find(ref, t);
      const { model: modelRef, ...rest } = patch;
      const model = modelRef === undefined ? undefined : await modelByRef(t, modelRef);
      const data: Prisma.DeploymentUncheckedUpdateInput = {};
      for (const [k, v] of Object.entries(rest)) if (v !== undefined) (data as Record<string, unknown>)[k] = v;
      if (model) data.modelId = model.id;
      const updated = await t.deployment.update({ where: { id: current.id }, data, include: { model: { select: { name: true } } } });
      const details: Prisma.InputJsonObject = {
        name: updated.name,
        fields: Object.keys(data),
        ...(patch.replicas !== undefined ? { replicas: { from: current.replicas, to: updated.replicas } } : {}),
        ...(model && model.id !== current.modelId ? { model: { from: current.model.name, to: model.name } } : {}),
      };
      await this.audit.record(actor, action, `deployment:${updated.id}`, details, t);
      return updated;
    });
    if (!tx) this.events.emit('deployment.changed', { deploymentId: row.id, action: 'updated' });
    return deploymentView(row);
  }

  scale(ref: string, replicas: number, actor: Actor): Promise<DeploymentView> {
    return this.update(ref, { replicas }, actor, 'deployment.scale');
  }

  rollout(ref: string, model: string, actor: Actor): Promise<DeploymentView> {
    return this.update(ref, { model }, actor, 'deployment.rollout');
  }

  async remove(ref: string, actor: Actor, tx?: Prisma.TransactionClient): Promise<DeploymentView> {
    const row = await this.inTx(tx, async (t) => {
      const current = await this.find(ref, t);
      // Its placements go with it (cascade); the scheduler publishes the devices' new desired state.
      await t.deployment.delete({ where: { id: current.id } });
      await this.audit.record(actor, 'deployment.delete', `deployment:${current.id}`, { name: current.name, model: current.model.name }, t);
      return current;
    });
    if (!tx) this.events.emit('deployment.changed', { deploymentId: row.id, action: 'deleted' });
    return deploymentView(row);
  }

  private inTx<T>(tx: Prisma.TransactionClient | undefined, run: (t: Prisma.TransactionClient) => Promise<T>): Promise<T> {
    return tx ? run(tx) : this.db.prisma.$transaction(run);
  }

  private async find(ref: string, t: Prisma.TransactionClient = this.db.prisma): Promise<DeploymentRow> {
    const include = { model: { select: { name: true } } } as const;
    const row = (await t.deployment.findUnique({ where: { id: ref }, include })) ?? (await t.deployment.findUnique({ where: { name: ref }, include }));
    if (!row) throw notFound(`deployment ${ref}`);
    return row;
  }
}

async function modelByRef(t: Prisma.TransactionClient, ref: string): Promise<Model> {
  const model = (await t.model.findUnique({ where: { name: ref } })) ?? (await t.model.findUnique({ where: { id: ref } }));
  if (!model) throw new AppError(ErrorCode.NOT_FOUND, `model ${ref} is not in the catalog; add it with POST /api/v1/models first`);
  return model;
}
