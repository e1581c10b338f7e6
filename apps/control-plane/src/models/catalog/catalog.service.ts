import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode, type ModelInput, type ModelPatch, type ModelTier, type ModelView, type Page, type PageQuery } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../../identity/audit/audit.service.js';
import { AppError, notFound } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { Model, Prisma } from '../../generated/prisma/client.js';
import { prismaCode, toPage } from './inputs.js';

/** A catalog row as the API answers it (`ModelSchema`: sizes as numbers, times as ISO strings). */
export function modelView(row: Model): ModelView {
  return {
    id: row.id,
    name: row.name,
    sourceUrl: row.sourceUrl,
    sha256: row.sha256,
    sizeBytes: Number(row.sizeBytes),
    quantization: row.quantization,
    memoryBytes: Number(row.memoryBytes),
    contextLength: row.contextLength,
    tier: row.tier,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** The catalog of models devices may be asked to hold. Every change is audited and announced (`catalog.changed`). */
@Injectable()
export class CatalogService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly audit: AuditService,
    private readonly events: FleetEvents,
  ) {}

  async list(page: PageQuery & { tier?: ModelTier | undefined }): Promise<Page<ModelView>> {
    const rows = await this.db.prisma.model.findMany({
      where: page.tier ? { tier: page.tier } : {},
      take: page.limit + 1,
      ...(page.cursor ? { cursor: { id: page.cursor } } : {}),
      orderBy: [{ name: 'asc' }, { id: 'asc' }],
    });
    return toPage(rows, page.limit, modelView);
  }

  /** By id or by name. */
  async get(ref: string): Promise<ModelView> {
    return modelView(await this.find(ref));
  }

  async create(input: ModelInput, actor: Actor, tx?: Prisma.TransactionClient): Promise<ModelView> {
    const run = async (t: Prisma.TransactionClient) => {
      const row = await t.model.create({ data: toData(input) }).catch((error: unknown) => {
        throw prismaCode(error) === 'P2002' ? new AppError(ErrorCode.CONFLICT, `a model named ${input.name} already exists`) : error;
      });
      await this.audit.record(actor, 'model.create', `model:${row.id}`, { name: row.name, tier: row.tier }, t);
      return row;
    };
    const row = tx ? await run(tx) : await this.db.prisma.$transaction(run);
    if (!tx) this.events.emit('catalog.changed', { modelId: row.id, name: row.name, action: 'created' });
    return modelView(row);
  }

  async update(ref: string, patch: ModelPatch, actor: Actor, tx?: Prisma.TransactionClient): Promise<ModelView> {
    const run = async (t: Prisma.TransactionClient) => {
      const current = await this.find(ref, t);
      const row = await t.model.update({ where: { id: current.id }, data: toData(patch) }).catch((error: unknown) => {
        throw prismaCode(error) === 'P2002' ? new AppError(ErrorCode.CONFLICT, `a model named ${patch.name ?? ''} already exists`) : error;
      });
      await this.audit.record(actor, 'model.update', `model:${row.id}`, { name: row.name, fields: Object.keys(patch) }, t);
      return row;
    };
    const row = tx ? await run(tx) : await this.db.prisma.$transaction(run);
    if (!tx) this.events.emit('catalog.changed', { modelId: row.id, name: row.name, action: 'updated' });
    return modelView(row);
  }

  /** Refused (409) while a deployment uses the model; its placements made by hand go with it. */
  async remove(ref: string, actor: Actor, tx?: Prisma.TransactionClient): Promise<ModelView> {
    const run = async (t: Prisma.TransactionClient) => {
      const current = await this.find(ref, t);
      const users = await t.deployment.findMany({ where: { modelId: current.id }, select: { name: true }, take: 5 });
      if (users.length > 0) throw inUse(current.name, users.map((u) => u.name));
      await t.model.delete({ where: { id: current.id } }).catch((error: unknown) => {
        // A deployment created meanwhile: the foreign key refuses (P2003 on both backends).
        throw prismaCode(error) === 'P2003' ? inUse(current.name, []) : error;
      });
      await this.audit.record(actor, 'model.delete', `model:${current.id}`, { name: current.name }, t);
      return current;
    };
    const row = tx ? await run(tx) : await this.db.prisma.$transaction(run);
    if (!tx) this.events.emit('catalog.changed', { modelId: row.id, name: row.name, action: 'deleted' });
    return modelView(row);
  }

  private async find(ref: string, t: Prisma.TransactionClient = this.db.prisma): Promise<Model> {
    const row = (await t.model.findUnique({ where: { id: ref } })) ?? (await t.model.findUnique({ where: { name: ref } }));
    if (!row) throw notFound(`model ${ref}`);
    return row;
  }
}

function inUse(name: string, deployments: string[]): AppError {
  const which = deployments.length ? `: ${deployments.join(', ')}` : '';
  return new AppError(ErrorCode.CONFLICT, `model ${name} is used by deployments${which}; delete them or change their model first`, { deployments });
}

function toData(input: Partial<ModelInput>): Prisma.ModelUncheckedUpdateInput & Prisma.ModelUncheckedCreateInput {
  const data: Record<string, unknown> = { ...input };
  if (input.sizeBytes !== undefined) data.sizeBytes = BigInt(input.sizeBytes);
  if (input.memoryBytes !== undefined) data.memoryBytes = BigInt(input.memoryBytes);
  return data as Prisma.ModelUncheckedUpdateInput & Prisma.ModelUncheckedCreateInput;
}
