import { Inject, Injectable } from '@nestjs/common';
import { ErrorCode, type DeploymentInput, type DeploymentView, type FleetApplyResult, type FleetChange, type FleetChangeAction } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../../identity/audit/audit.service.js';
import { CatalogService, modelView } from '../catalog/catalog.service.js';
import { AppError } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import { DeploymentsService, deploymentView } from '../deployments/deployments.service.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { Prisma } from '../../generated/prisma/client.js';
import {
  DEFAULT_ROUTING,
  FLEET_API_VERSION,
  FleetFileError,
  FleetMetadataSchema,
  RoutingSchema,
  formatIssue,
  parseFleetFile,
  writeFleetFile,
  type FleetFile,
  type FleetFileIssue,
  type Routing,
} from './fleet-file.js';

export interface ApplyOptions {
  dryRun: boolean;
  /** also delete deployments and models that are not in the file */
  prune: boolean;
}

const ROUTING_KEY = 'routing';
const METADATA_KEY = 'metadata';
const MODEL_FIELDS = ['sourceUrl', 'sha256', 'sizeBytes', 'quantization', 'memoryBytes', 'contextLength', 'tier'] as const;
const DEPLOYMENT_FIELDS = ['model', 'replicas', 'labelSelector', 'pinnedDeviceIds', 'contextSize', 'parallel', 'accelerator'] as const;

/** The fleet file: declarative apply (idempotent, with a diff) and export; the stored routing block. */
@Injectable()
export class FleetService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly catalog: CatalogService,
    private readonly deployments: DeploymentsService,
    private readonly audit: AuditService,
    private readonly events: FleetEvents,
  ) {}

  /** Routing settings for the gateway: what the last applied fleet file said, or the defaults. */
  async routing(): Promise<Routing> {
    const row = await this.db.prisma.fleetSetting.findUnique({ where: { key: ROUTING_KEY } });
    const parsed = row ? RoutingSchema.safeParse(row.value) : undefined;
    return parsed?.success ? parsed.data : DEFAULT_ROUTING;
  }

  async apply(text: string, options: ApplyOptions, actor: Actor): Promise<FleetApplyResult> {
    const { file, locate } = parseOrThrow(text);
    const emitted: (() => void)[] = [];
    const run = async (tx: Prisma.TransactionClient): Promise<FleetChange[]> => {
      const changes: FleetChange[] = [];
      const [models, deployments, settings] = await Promise.all([
        tx.model.findMany(),
        tx.deployment.findMany({ include: { model: { select: { name: true } } } }),
        tx.fleetSetting.findMany({ where: { key: { in: [ROUTING_KEY, METADATA_KEY] } } }),
      ]);
      const modelsByName = new Map(models.map((m) => [m.name, modelView(m)]));
      const deploymentsByName = new Map(deployments.map((d) => [d.name, deploymentView(d)]));
      const fileModels = new Set(file.models.map((m) => m.name));
      const fileDeployments = new Set(file.deployments.map((d) => d.name));

      // References the schema cannot check: every deployment's model is in the file or already in the catalog (and
      // stays there), and so is every model routing names.
      const kept = (name: string) => fileModels.has(name) || (modelsByName.has(name) && !options.prune);
      const problems: FleetFileIssue[] = [];
      file.deployments.forEach((d, i) => {
        if (!kept(d.model)) problems.push(locate(['deployments', i, 'model'], `model ${d.model} is neither in this file nor in the catalog`));
      });
      if (file.routing) {
        for (const tier of ['small', 'medium', 'large'] as const) {
          file.routing.tiers[tier].forEach((name, i) => {
            if (!kept(name)) problems.push(locate(['routing', 'tiers', tier, i], `model ${name} is neither in this file nor in the catalog`));
          });
        }
      }
      if (problems.length > 0) throw invalid(new FleetFileError(problems));

      for (const m of file.models) {
        const current = modelsByName.get(m.name);
        const fields = current ? MODEL_FIELDS.filter((f) => !same(current[f], m[f])) : [];
        const action: FleetChangeAction = !current ? 'create' : fields.length ? 'update' : 'unchanged';
        changes.push({ kind: 'model', name: m.name, action, ...(action === 'update' ? { fields } : {}) });
        if (options.dryRun || action === 'unchanged') continue;
        const row = current ? await this.catalog.update(current.id, pick(m, fields), actor, tx) : await this.catalog.create(m, actor, tx);
        emitted.push(() => this.events.emit('catalog.changed', { modelId: row.id, name: row.name, action: current ? 'updated' : 'created' }));
      }
      for (const d of file.deployments) {
        const current = deploymentsByName.get(d.name);
        const fields = current ? DEPLOYMENT_FIELDS.filter((f) => !same(normalizeDeployment(current)[f], normalizeDeployment(d)[f])) : [];
        const action: FleetChangeAction = !current ? 'create' : fields.length ? 'update' : 'unchanged';
        changes.push({ kind: 'deployment', name: d.name, action, ...(action === 'update' ? { fields } : {}) });
        if (options.dryRun || action === 'unchanged') continue;
        const row = current
          ? await this.deployments.update(current.id, pick(d, fields), actor, 'deployment.update', tx)
          : await this.deployments.create(d, actor, tx);
        emitted.push(() => this.events.emit('deployment.changed', { deploymentId: row.id, action: current ? 'updated' : 'created' }));
      }
      if (options.prune) {
        for (const d of [...deploymentsByName.values()].filter((x) => !fileDeployments.has(x.name))) {
          changes.push({ kind: 'deployment', name: d.name, action: 'delete' });
          if (options.dryRun) continue;
          await this.deployments.remove(d.id, actor, tx);
          emitted.push(() => this.events.emit('deployment.changed', { deploymentId: d.id, action: 'deleted' }));
        }
        // Still used by a deployment that stays (one in the file naming a catalog model): kept, the reference wins.
        const used = new Set(file.deployments.map((d) => d.model));
        for (const m of [...modelsByName.values()].filter((x) => !fileModels.has(x.name) && !used.has(x.name))) {
          changes.push({ kind: 'model', name: m.name, action: 'delete' });
          if (options.dryRun) continue;
          await this.catalog.remove(m.id, actor, tx);
          emitted.push(() => this.events.emit('catalog.changed', { modelId: m.id, name: m.name, action: 'deleted' }));
        }
      }
      for (const [key, value] of [
        [ROUTING_KEY, file.routing],
        [METADATA_KEY, file.metadata],
      ] as const) {
        if (value === undefined) continue;
        const stored = settings.find((s) => s.key === key);
        const action: FleetChangeAction = !stored ? 'create' : same(stored.value, value) ? 'unchanged' : 'update';
        changes.push({ kind: key, name: key, action });
        if (options.dryRun || action === 'unchanged') continue;
        const json = value as Prisma.InputJsonObject;
        await tx.fleetSetting.upsert({ where: { key }, create: { key, value: json }, update: { value: json } });
        await this.audit.record(actor, `fleet.${key}.update`, `fleet:${key}`, {}, tx);
        if (key === ROUTING_KEY) emitted.push(() => this.events.emit('routing.changed', { at: new Date().toISOString() }));
      }
      const result = summarize(changes, options.dryRun);
      if (!options.dryRun && result.changed) {
        await this.audit.record(actor, 'fleet.apply', 'fleet', { summary: result.summary, prune: options.prune }, tx);
      }
      return changes;
    };
    // A dry run reads in a transaction too (one consistent view) and writes nothing.
    const changes = await this.db.prisma.$transaction(run, { timeout: 60_000, maxWait: 10_000 });
    for (const emit of emitted) emit();
    return summarize(changes, options.dryRun);
  }

  /** The current models, deployments and routing as a fleet file; applying it changes nothing. */
  async export(): Promise<string> {
    const [models, deployments, settings] = await this.db.prisma.$transaction(
      (tx) =>
        Promise.all([
          tx.model.findMany({ orderBy: { name: 'asc' } }),
          tx.deployment.findMany({ include: { model: { select: { name: true } } }, orderBy: { name: 'asc' } }),
          tx.fleetSetting.findMany({ where: { key: { in: [ROUTING_KEY, METADATA_KEY] } } }),
        ]),
      { timeout: 60_000 },
    );
    const file: FleetFile = {
      apiVersion: FLEET_API_VERSION,
      kind: 'Fleet',
      models: models.map((m) => {
        const { id: _id, createdAt: _c, updatedAt: _u, ...rest } = modelView(m);
        return rest;
      }),
      deployments: deployments.map((d) => {
        const v = deploymentView(d);
        return {
          name: v.name,
          model: v.model,
          replicas: v.replicas,
          labelSelector: v.labelSelector,
          pinnedDeviceIds: v.pinnedDeviceIds,
          contextSize: v.contextSize,
          parallel: v.parallel,
          accelerator: v.accelerator,
        };
      }),
    };
    const metadata = FleetMetadataSchema.safeParse(settings.find((s) => s.key === METADATA_KEY)?.value);
    if (metadata.success) file.metadata = metadata.data;
    const routing = RoutingSchema.safeParse(settings.find((s) => s.key === ROUTING_KEY)?.value);
    if (routing.success) file.routing = routing.data;
    // Key order as in the documentation: apiVersion, kind, metadata, models, deployments, routing.
    const ordered: FleetFile = {
      apiVersion: file.apiVersion,
      kind: file.kind,
      ...(file.metadata ? { metadata: file.metadata } : {}),
      models: file.models,
      deployments: file.deployments,
      ...(file.routing ? { routing: file.routing } : {}),
    };
    return writeFleetFile(ordered, `Flotilla fleet file, exported ${new Date().toISOString()}.\nApply it with: flotilla apply -f <this file>`);
  }
}

function parseOrThrow(text: string) {
  try {
    return parseFleetFile(text);
  } catch (error) {
    if (error instanceof FleetFileError) throw invalid(error);
    throw error;
  }
}

function invalid(error: FleetFileError): AppError {
  const first = error.issues[0];
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problem${error.issues.length > 2 ? 's' : ''})` : '';
  return new AppError(ErrorCode.INVALID_REQUEST, `invalid fleet file: ${first ? formatIssue(first) : 'unknown problem'}${more}`, { issues: error.issues });
}

function normalizeDeployment(d: DeploymentInput | DeploymentView) {
  return { ...d, pinnedDeviceIds: [...d.pinnedDeviceIds].sort() };
}

function pick<T extends object, K extends keyof T>(value: T, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  for (const k of keys) out[k] = value[k];
  return out;
}

/** Deep equality of JSON-like values, ignoring object key order. */
function same(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) : v,
  );
}

function summarize(changes: FleetChange[], dryRun: boolean): FleetApplyResult {
  const count = (a: FleetChangeAction) => changes.filter((c) => c.action === a).length;
  const changed = changes.some((c) => c.action !== 'unchanged');
  const parts = (
    [
      ['create', dryRun ? 'to create' : 'created'],
      ['update', dryRun ? 'to update' : 'updated'],
      ['delete', dryRun ? 'to delete' : 'deleted'],
      ['unchanged', 'unchanged'],
    ] as const
  )
    .filter(([a]) => count(a) > 0)
    .map(([a, word]) => `${count(a)} ${word}`);
  const summary = changed ? parts.join(', ') : `no changes: everything (${changes.length} item${changes.length === 1 ? '' : 's'}) already matches the file`;
  return { dryRun, changed, summary, changes };
}

