import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { encode, topics, type ScheduleRunView, type SchedulerCounters } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, DATABASE, LOGGER } from '../../platform/tokens.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import {
  desiredContent,
  desiredMessage,
  deviceLimits,
  snapshotQueries,
  toPlannerDeployment,
  toPlannerDevice,
  toPlannerModel,
  toPlannerModelState,
  toPlannerPlacement,
  type SnapshotModel,
} from './fleet-snapshot.js';
import { planPlacements, type DeploymentPlan, type PlannerPlacement, type PlanResult } from './planner.js';
import { SCHEDULER_SETTINGS, type SchedulerSettings } from './placement.settings.js';

/** What one planning run did: what `GET /api/v1/scheduler` answers as `lastRun`. */
export type ScheduleRun = ScheduleRunView;

/**
 * Runs the planner and makes its result real: placement rows, a new `Device.desiredVersion` for every device whose
 * desired state changed, the desired state published retained on `topics.desired(deviceId)` [P-3.4], and a
 * `placement.changed` event. Runs on fleet events (debounced) and periodically; runs never overlap.
 */
@Injectable()
export class PlacementService implements OnApplicationBootstrap, OnModuleDestroy {
  private timer: NodeJS.Timeout | undefined;
  private interval: NodeJS.Timeout | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private readonly unsubscribe: (() => void)[] = [];
  /** desired content (JSON) last published per device, to tell whether a version bump is due */
  private readonly published = new Map<string, string>();
  /** device/model pairs that failed, until when they are avoided */
  private readonly failures = new Map<string, { deviceId: string; modelId: string; until: number }>();
  private last: ScheduleRun | undefined;
  private readonly counts: SchedulerCounters = { runs: 0, indexLoads: 0, republishPasses: 0, republished: 0 };

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly rootLogger: Logger,
    @Inject(SCHEDULER_SETTINGS) private readonly settings: SchedulerSettings,
    private readonly events: FleetEvents,
    private readonly presence: DevicePresence,
  ) {}

  private get logger(): Logger {
    return this.rootLogger.child({ component: 'scheduler' });
  }

  async onApplicationBootstrap(): Promise<void> {
    const trigger = () => this.trigger();
    this.unsubscribe.push(
      this.events.on('device.enrolled', trigger),
      this.events.on('device.updated', trigger),
      this.events.on('deployment.changed', trigger),
      this.events.on('catalog.changed', trigger),
      this.events.on('model-state.changed', trigger),
      this.events.on('device.status', (e) => {
        // The retained message covers reconnects; republishing on online also covers a broker that lost it.
        if (e.status === 'online') this.republish(e.deviceId).catch((error: unknown) => this.logger.error({ err: error, deviceId: e.deviceId }, 'republishing a desired state failed'));
        this.trigger();
      }),
    );
    // The embedded broker keeps retained messages in memory only: after a restart every device's desired state is
    // published again, with a new version so agents re-check it even if this process died before publishing.
    await this.exclusive(() => this.republishAll()).catch((error: unknown) => this.logger.error({ err: error }, 'republishing desired states failed'));
    this.interval = setInterval(() => this.trigger(0), this.settings.intervalMs);
    this.interval.unref();
    this.trigger(0);
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    for (const off of this.unsubscribe.splice(0)) off();
    clearTimeout(this.timer);
    clearInterval(this.interval);
    await this.chain;
  }

  /** The last run's result (undefined before the first run). */
  lastRun(): ScheduleRun | undefined {
    return this.last;
  }

  /** What the scheduler did since start (`GET /api/v1/scheduler`). */
  counters(): SchedulerCounters {
    return { ...this.counts };
  }

  /** The last plan's view of one deployment. */
  deploymentStatus(deploymentId: string): DeploymentPlan | undefined {
    return this.last?.deployments.find((d) => d.deploymentId === deploymentId);
  }

  /** Plans soon: events within `debounceMs` share one run. */
  trigger(delayMs = this.settings.debounceMs): void {
    if (this.stopped) return;
    if (this.timer && delayMs > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.runNow().catch(() => undefined);
    }, delayMs);
  }

  /** Plans now (after the run in progress, if any) and returns what this run did. */
  runNow(): Promise<ScheduleRun | undefined> {
    return this.exclusive(async () => {
      if (this.stopped) return undefined;
      try {
        return await this.runOnce();
      } catch (error) {
        // Usually a concurrent change (a deployment deleted meanwhile): the next run sees the new state.
        this.logger.warn({ err: error }, 'placement run failed; retrying');
        this.trigger(1000);
        throw error;
      }
    });
  }

  /** Runs, publishes and republishes one at a time, so an older version is never published after a newer one. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async runOnce(): Promise<ScheduleRun> {
    const started = Date.now();
    this.counts.runs += 1;
    this.counts.indexLoads += 1;
    const [deployments, models, devices, placements, states] = await snapshotQueries(this.db.prisma);
    const modelsById = new Map(models.map((m) => [m.id, m]));
    const modelsByName = new Map(models.map((m) => [m.name, m]));
    const before = placements.map(toPlannerPlacement);
    const plan = planPlacements({
      deployments: deployments.map(toPlannerDeployment),
      models: models.map(toPlannerModel),
      devices: devices.map((d) => {
        const device = toPlannerDevice(d, states, modelsByName);
        // After a restart a stored `online` is an earlier process's word: not ready until the device is back.
        return d.status === 'online' && this.presence.isReconnecting(d.id, d.status) ? { ...device, status: 'reconnecting' as const } : device;
      }),
      placements: before,
      modelStates: states.map(toPlannerModelState),
      avoid: this.avoidList(states, modelsByName, started),
      options: this.settings.planner,
    });

    // A device's version moves when the content it should hold changes, whether through placements or through
    // the catalog or limits (a new file for the same model name, a new limit).
    const byDevice = groupByDevice(plan.placements);
    const beforeByDevice = groupByDevice(before);
    const bump: { id: string; content: string }[] = [];
    for (const device of devices) {
      const content = JSON.stringify(desiredContent(byDevice.get(device.id) ?? [], modelsById, deviceLimits(device.limits)));
      const baseline =
        this.published.get(device.id) ??
        JSON.stringify(desiredContent(beforeByDevice.get(device.id) ?? [], modelsById, deviceLimits(device.limits)));
      if (content !== baseline) bump.push({ id: device.id, content });
    }

    const devicesById = new Map(devices.map((d) => [d.id, d]));
    for (const id of this.published.keys()) if (!devicesById.has(id)) this.published.delete(id);
    const versions = await this.write(plan, bump.map((b) => b.id), devicesById);
    const publishedDeviceIds: string[] = [];
    for (const { id, content } of bump) {
      const version = versions.get(id);
      if (version === undefined) continue;
      await this.publish(id, version, byDevice.get(id) ?? [], modelsById, devicesById.get(id)?.limits);
      this.published.set(id, content);
      publishedDeviceIds.push(id);
      this.events.emit('placement.changed', { deviceId: id, desiredVersion: version });
    }
    const run: ScheduleRun = {
      at: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      added: plan.added.length,
      removed: plan.removed.length,
      updated: plan.updated.length,
      publishedDeviceIds,
      deployments: plan.deployments,
    };
    this.last = run;
    if (plan.added.length + plan.removed.length + plan.updated.length + publishedDeviceIds.length > 0) {
      this.logger.info(
        { added: plan.added.length, removed: plan.removed.length, updated: plan.updated.length, devices: publishedDeviceIds, ms: run.durationMs },
        'placements changed',
      );
    }
    for (const d of plan.deployments) {
      if (d.unsatisfied) this.logger.debug({ deployment: d.name, missing: d.unsatisfied.missing }, d.unsatisfied.message);
    }
    return run;
  }

  /** Writes the placement changes and bumps the versions in one transaction; returns the new versions. */
  private async write(plan: PlanResult, bumpIds: string[], devices: Map<string, { desiredVersion: number }>): Promise<Map<string, number>> {
    const versions = new Map<string, number>();
    if (bumpIds.length === 0 && plan.added.length + plan.removed.length + plan.updated.length === 0) return versions;
    await this.db.prisma.$transaction(async (tx) => {
      if (bumpIds.length > 0) {
        const rows = await tx.device.updateManyAndReturn({
          where: { id: { in: bumpIds } },
          data: { desiredVersion: { increment: 1 } },
          select: { id: true, desiredVersion: true },
        });
        for (const row of rows) versions.set(row.id, row.desiredVersion);
      }
      const versionOf = (deviceId: string) => versions.get(deviceId) ?? devices.get(deviceId)?.desiredVersion ?? 0;
      if (plan.removed.length > 0) {
        await tx.placement.deleteMany({ where: { OR: plan.removed.map((p) => ({ deviceId: p.deviceId, modelId: p.modelId })) } });
      }
      for (const p of plan.updated) {
        await tx.placement.update({
          where: { deviceId_modelId: { deviceId: p.deviceId, modelId: p.modelId } },
          data: { ...placementData(p), desiredVersion: versionOf(p.deviceId) },
        });
      }
      if (plan.added.length > 0) {
        await tx.placement.createMany({
          data: plan.added.map((p) => ({ deviceId: p.deviceId, modelId: p.modelId, ...placementData(p), desiredVersion: versionOf(p.deviceId) })),
        });
      }
    }, { timeout: 60_000, maxWait: 10_000 });
    return versions;
  }

  private async publish(
    deviceId: string,
    version: number,
    placements: PlannerPlacement[],
    models: Map<string, SnapshotModel>,
    limits: unknown,
  ): Promise<void> {
    const message = desiredMessage(version, desiredContent(placements, models, deviceLimits(limits)), Date.now());
    await this.broker.publish(topics.desired(deviceId), encode('desired', message), { qos: 1, retain: true });
    this.logger.info({ deviceId, version, models: message.models.map((m) => m.name) }, 'desired state published');
  }

  /** Publishes a device's current desired state again, same version (after it comes online). */
  republish(deviceId: string): Promise<void> {
    return this.exclusive(() => this.republishNow(deviceId));
  }

  private async republishNow(deviceId: string): Promise<void> {
    if (this.stopped) return;
    try {
      const device = await this.db.prisma.device.findUnique({ where: { id: deviceId }, select: { desiredVersion: true, limits: true } });
      if (!device || device.desiredVersion < 1) return;
      const rows = await this.db.prisma.placement.findMany({ where: { deviceId }, include: { model: true } });
      const models = new Map(rows.map((r) => [r.modelId, r.model]));
      await this.publish(deviceId, device.desiredVersion, rows.map(toPlannerPlacement), models, device.limits);
      this.counts.republishPasses += 1;
      this.counts.republished += 1;
    } catch (error) {
      this.logger.warn({ err: error, deviceId }, 'republishing the desired state failed');
    }
  }

  private async republishAll(): Promise<void> {
    const [devices, rows] = await this.db.prisma.$transaction(async (tx) => {
      await tx.device.updateMany({ where: { desiredVersion: { gt: 0 } }, data: { desiredVersion: { increment: 1 } } });
      return Promise.all([
        tx.device.findMany({ where: { desiredVersion: { gt: 0 } }, select: { id: true, desiredVersion: true, limits: true } }),
        tx.placement.findMany({ include: { model: true } }),
      ]);
    });
    const models = new Map(rows.map((r) => [r.modelId, r.model]));
    const byDevice = groupByDevice(rows.map(toPlannerPlacement));
    for (const device of devices) {
      const placements = byDevice.get(device.id) ?? [];
      await this.publish(device.id, device.desiredVersion, placements, models, device.limits);
      this.published.set(device.id, JSON.stringify(desiredContent(placements, models, deviceLimits(device.limits))));
    }
  }

  /** Device/model pairs reported `failed`, avoided for `failureBackoffMs` so the replica goes elsewhere. */
  private avoidList(states: { deviceId: string; modelName: string; state: string; errorCode: string | null }[], models: Map<string, SnapshotModel>, now: number) {
    for (const s of states) {
      const model = models.get(s.modelName);
      if (s.state !== 'failed' || !model) continue;
      const k = `${s.deviceId}\u0000${model.id}`;
      if (!this.failures.has(k)) this.logger.warn({ deviceId: s.deviceId, model: model.name, code: s.errorCode }, 'model failed on device; placing it elsewhere');
      this.failures.set(k, { deviceId: s.deviceId, modelId: model.id, until: now + this.settings.failureBackoffMs });
    }
    for (const [k, f] of this.failures) if (f.until <= now) this.failures.delete(k);
    return [...this.failures.values()].map(({ deviceId, modelId }) => ({ deviceId, modelId }));
  }
}

function placementData(p: PlannerPlacement) {
  return { deploymentId: p.deploymentId, loaded: p.loaded, pinned: p.pinned, contextSize: p.contextSize, parallel: p.parallel };
}

function groupByDevice(placements: readonly PlannerPlacement[]): Map<string, PlannerPlacement[]> {
  const map = new Map<string, PlannerPlacement[]>();
  for (const p of placements) {
    const list = map.get(p.deviceId) ?? [];
    list.push(p);
    map.set(p.deviceId, list);
  }
  return map;
}
