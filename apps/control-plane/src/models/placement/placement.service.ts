import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { encode, topics, type DesiredState, type ScheduleRunView, type SchedulerCounters } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { Prisma } from '../../generated/prisma/client.js';
import { BROKER, DATABASE, LOGGER } from '../../platform/tokens.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import { chunkRows, chunkedStatements } from '../../platform/database/bulk.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { DevicePresence } from '../../devices/ingest/device-presence.js';
import { desiredContent, desiredMessage, deviceLimits, snapshotQueries, type SnapshotModel } from './fleet-snapshot.js';
import { FleetIndex } from './fleet-index.js';
import { planPlacements, type DeploymentPlan, type PlannerPlacement, type PlanResult } from './planner.js';
import { SCHEDULER_SETTINGS, type SchedulerSettings } from './placement.settings.js';

/** What one planning run did: what `GET /api/v1/scheduler` answers as `lastRun`. */
export type ScheduleRun = ScheduleRunView;

type DesiredContent = Pick<DesiredState, 'models' | 'limits'>;

/** Publishes in flight at once: the embedded broker stores and delivers each; thousands at once only queue up. */
const PUBLISH_CONCURRENCY = 256;

/**
 * Runs the planner and makes its result real: placement rows, a new `Device.desiredVersion` for every device whose
 * desired state changed, the desired state published retained on `topics.desired(deviceId)` [P-3.4], and a
 * `placement.changed` event. Plans from an in-memory fleet index (see FleetIndex) that events keep current, so a run
 * reads only what changed. Events are coalesced: a run starts `debounceMs` after the last of a burst (at most
 * `maxDelayMs` after its first), and a periodic tick plans only when something changed. Devices that come online get
 * their current desired state again in one batched pass after the run. Runs and publishes never overlap.
 */
@Injectable()
export class PlacementService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly index = new FleetIndex();
  private timer: NodeJS.Timeout | undefined;
  /** when the first event of the burst now being coalesced came */
  private pendingSince: number | undefined;
  /** a pass is queued and not started yet: it will see every change made before it starts */
  private queued = false;
  private interval: NodeJS.Timeout | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private readonly unsubscribe: (() => void)[] = [];
  /** what each device was last sent (version and content), to tell whether a version bump is due and to republish */
  private readonly published = new Map<string, { version: number; content: DesiredContent; json: string }>();
  /** devices that came online since the last pass: they get their current desired state again */
  private readonly republishDue = new Set<string>();
  /** device/model pairs that failed, until when they are avoided */
  private readonly failures = new Map<string, { deviceId: string; modelId: string; until: number }>();
  /** the index generation and the reconnecting devices the last plan was made with: a tick with neither moved is idle */
  private plannedGeneration = -1;
  private plannedReconnecting = new Set<string>();
  private lastFullLoad = 0;
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
    // Every handler is O(1): it marks what changed in the index and asks for a (coalesced) pass.
    this.unsubscribe.push(
      this.events.on('device.enrolled', (e) => this.changed(() => this.index.markDevice(e.deviceId))),
      this.events.on('device.updated', (e) => this.changed(() => this.index.markDevice(e.deviceId))),
      this.events.on('deployment.changed', () => this.changed(() => this.index.markCatalog())),
      this.events.on('catalog.changed', () => this.changed(() => this.index.markCatalog())),
      this.events.on('model-state.changed', (e) => this.changed(() => this.index.markStates(e.deviceId))),
      this.events.on('device.status', (e) =>
        this.changed(() => {
          this.index.setStatus(e.deviceId, e.status);
          // The retained message covers reconnects; republishing on online also covers a broker that lost it.
          if (e.status === 'online') this.republishDue.add(e.deviceId);
        }),
      ),
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

  private changed(mark: () => void): void {
    mark();
    this.trigger();
  }

  /**
   * Plans soon. Events of a burst share one pass: it starts `delayMs` after the last of them, but no later than
   * `maxDelayMs` after the first, so a steady stream of events still gets planned.
   */
  trigger(delayMs = this.settings.debounceMs): void {
    if (this.stopped) return;
    const now = Date.now();
    this.pendingSince ??= now;
    const due = Math.min(now + delayMs, this.pendingSince + this.settings.maxDelayMs);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.fire(), Math.max(0, due - now));
  }

  private fire(): void {
    this.timer = undefined;
    this.pendingSince = undefined;
    if (this.queued || this.stopped) return;
    this.queued = true;
    void this.exclusive(() => {
      this.queued = false;
      return this.pass(false);
    }).catch(() => undefined);
  }

  /**
   * Reads the whole fleet again and plans now (after the pass in progress, if any); returns what this run did. Also
   * the way to make the scheduler see rows written behind its back.
   */
  runNow(): Promise<ScheduleRun | undefined> {
    return this.exclusive(() => {
      this.index.invalidate();
      return this.pass(true);
    });
  }

  /** Runs, publishes and republishes one at a time, so an older version is never published after a newer one. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** One pass: plan if anything changed (or `force`), then republish to the devices that came online meanwhile. */
  private async pass(force: boolean): Promise<ScheduleRun | undefined> {
    if (this.stopped) return undefined;
    let run: ScheduleRun | undefined;
    const bumped = new Set<string>();
    try {
      run = await this.planIfChanged(force, bumped);
    } catch (error) {
      // Usually a concurrent change (a deployment deleted meanwhile): the next run sees the new state, and plans
      // even if nothing else moved.
      this.plannedGeneration = -1;
      this.logger.warn({ err: error }, 'placement run failed; retrying');
      this.trigger(1000);
      if (force) throw error;
    } finally {
      await this.republishPending(bumped);
    }
    return run;
  }

  private async planIfChanged(force: boolean, bumped: Set<string>): Promise<ScheduleRun | undefined> {
    const now = Date.now();
    // A full read now and then covers rows changed without an event (by hand, by another tool).
    if (now - this.lastFullLoad >= this.settings.resyncMs) this.index.invalidate();
    const refreshed = await this.index.refresh(this.db.prisma);
    if (refreshed === 'full') this.loadedAll(now);
    const reconnecting = this.reconnecting();
    const failureExpired = [...this.failures.values()].some((f) => f.until <= now);
    const idle =
      this.index.changes === this.plannedGeneration && !failureExpired && reconnecting.size === this.plannedReconnecting.size && [...reconnecting].every((id) => this.plannedReconnecting.has(id));
    if (idle && !force) return undefined;
    this.plannedGeneration = this.index.changes;
    this.plannedReconnecting = reconnecting;
    return this.runOnce(now, reconnecting, bumped);
  }

  private loadedAll(now: number): void {
    this.counts.indexLoads += 1;
    this.lastFullLoad = now;
    for (const id of this.published.keys()) if (!this.index.device(id)) this.published.delete(id);
  }

  /** Devices stored as online/draining that have not come back to this process (see DevicePresence). */
  private reconnecting(): Set<string> {
    const ids = new Set<string>();
    for (const id of this.index.deviceIds()) {
      const row = this.index.device(id);
      if (row && this.presence.isReconnecting(id, row.status)) ids.add(id);
    }
    return ids;
  }

  private async runOnce(started: number, reconnecting: Set<string>, bumped: Set<string>): Promise<ScheduleRun> {
    this.counts.runs += 1;
    const view = this.index.view();
    const modelsById = view.modelsById;
    const plan = planPlacements({
      deployments: view.deployments,
      models: view.models,
      // After a restart a stored `online` is an earlier process's word: not ready until the device is back.
      devices: view.devices.map(({ device }) => (reconnecting.has(device.id) ? { ...device, status: 'reconnecting' as const } : device)),
      placements: view.placements,
      modelStates: view.modelStates,
      avoid: this.avoidList(view.modelsByName, started),
      options: this.settings.planner,
    });

    // A device's version moves when the content it should hold changes, whether through placements or through the
    // catalog or limits (a new file for the same model name, a new limit). Only devices with placements (before or
    // after), with models in what they were sent, or whose row was read again can differ from what they were sent.
    const byDevice = groupByDevice(plan.placements);
    const beforeByDevice = groupByDevice(view.placements);
    const reloaded = this.index.takeReloaded();
    const candidates = new Set(reloaded === 'all' ? this.index.deviceIds() : reloaded);
    for (const id of byDevice.keys()) candidates.add(id);
    for (const id of beforeByDevice.keys()) candidates.add(id);
    // e.g. a deployment deleted: its placements went with it, the devices still hold what they were sent
    for (const [id, sent] of this.published) if (sent.content.models.length > 0) candidates.add(id);
    const bump: { id: string; content: DesiredContent; json: string }[] = [];
    for (const id of candidates) {
      const device = this.index.device(id);
      if (!device) continue;
      const limits = deviceLimits(device.limits);
      const content = desiredContent(byDevice.get(id) ?? [], modelsById, limits);
      const json = JSON.stringify(content);
      const baseline = this.published.get(id)?.json ?? JSON.stringify(desiredContent(beforeByDevice.get(id) ?? [], modelsById, limits));
      if (json !== baseline) bump.push({ id, content, json });
    }

    const versions = await this.write(plan, bump.map((b) => b.id));
    const sends = bump.flatMap(({ id, content, json }) => {
      const version = versions.get(id);
      return version === undefined ? [] : [{ deviceId: id, version, content, json }];
    });
    await this.publishMany(sends);
    const publishedDeviceIds: string[] = [];
    for (const s of sends) {
      bumped.add(s.deviceId);
      publishedDeviceIds.push(s.deviceId);
      this.events.emit('placement.changed', { deviceId: s.deviceId, desiredVersion: s.version });
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
        {
          added: plan.added.length,
          removed: plan.removed.length,
          updated: plan.updated.length,
          published: publishedDeviceIds.length,
          devices: publishedDeviceIds.slice(0, 20),
          ms: run.durationMs,
        },
        'placements changed',
      );
    }
    for (const d of plan.deployments) {
      if (d.unsatisfied) this.logger.debug({ deployment: d.name, missing: d.unsatisfied.missing }, d.unsatisfied.message);
    }
    return run;
  }

  /**
   * Writes the placement changes and bumps the versions in one transaction, every statement chunked under the bind
   * parameter limit; returns the new versions. The index follows only once the transaction committed; a failure
   * (which may leave the outcome unknown) makes the next run read everything again.
   */
  private async write(plan: PlanResult, bumpIds: string[]): Promise<Map<string, number>> {
    const versions = new Map<string, number>();
    if (bumpIds.length === 0 && plan.added.length + plan.removed.length + plan.updated.length === 0) return versions;
    try {
      await this.db.prisma.$transaction(async (tx) => {
        for (const chunk of chunkRows(bumpIds, 1)) {
          const rows = await tx.device.updateManyAndReturn({
            where: { id: { in: chunk } },
            data: { desiredVersion: { increment: 1 } },
            select: { id: true, desiredVersion: true },
          });
          for (const row of rows) versions.set(row.id, row.desiredVersion);
        }
        const versionOf = (deviceId: string) => versions.get(deviceId) ?? this.index.device(deviceId)?.desiredVersion ?? 0;
        for (const chunk of chunkRows(plan.removed, 2)) {
          await tx.placement.deleteMany({ where: { OR: chunk.map((p) => ({ deviceId: p.deviceId, modelId: p.modelId })) } });
        }
        const updates = plan.updated.map(
          (p) =>
            Prisma.sql`(${p.deviceId}::text, ${p.modelId}::text, ${p.deploymentId}::text, ${p.loaded}::boolean, ${p.pinned}::boolean, ${p.contextSize}::integer, ${p.parallel}::integer, ${versionOf(p.deviceId)}::integer)`,
        );
        const statements = chunkedStatements(
          updates,
          (values) => Prisma.sql`UPDATE "placements" AS p SET "deployment_id" = v.deployment_id, "loaded" = v.loaded, "pinned" = v.pinned,
            "context_size" = v.context_size, "parallel" = v.parallel, "desired_version" = v.desired_version, "updated_at" = now()
            FROM (VALUES ${values}) AS v(device_id, model_id, deployment_id, loaded, pinned, context_size, parallel, desired_version)
            WHERE p."device_id" = v.device_id AND p."model_id" = v.model_id`,
        );
        for (const statement of statements) await tx.$executeRaw(statement);
        // id, timestamps and the placement's own 8 columns
        for (const chunk of chunkRows(plan.added, 12)) {
          await tx.placement.createMany({
            data: chunk.map((p) => ({ deviceId: p.deviceId, modelId: p.modelId, ...placementData(p), desiredVersion: versionOf(p.deviceId) })),
          });
        }
      }, { timeout: 60_000, maxWait: 10_000 });
    } catch (error) {
      this.index.invalidate();
      throw error;
    }
    this.index.applyWrite(plan, versions);
    return versions;
  }

  /** Publishes desired states, many in flight at once (the broker keeps each device's order: one state per device per call). */
  private async publishMany(sends: readonly { deviceId: string; version: number; content: DesiredContent; json: string }[]): Promise<void> {
    const now = Date.now();
    for (let i = 0; i < sends.length; i += PUBLISH_CONCURRENCY) {
      const batch = sends.slice(i, i + PUBLISH_CONCURRENCY);
      const results = await Promise.allSettled(
        batch.map((s) => this.broker.publish(topics.desired(s.deviceId), encode('desired', desiredMessage(s.version, s.content, now)), { qos: 1, retain: true })),
      );
      for (const [j, result] of results.entries()) {
        const s = batch[j];
        if (!s) continue;
        if (result.status === 'rejected') {
          this.logger.warn({ err: result.reason, deviceId: s.deviceId, version: s.version }, 'publishing a desired state failed');
          continue;
        }
        this.published.set(s.deviceId, { version: s.version, content: s.content, json: s.json });
        this.logger.debug({ deviceId: s.deviceId, version: s.version, models: s.content.models.map((m) => m.name) }, 'desired state published');
      }
    }
  }

  /** Publishes again, same version, the current desired state of every device that came online since the last pass. */
  private async republishPending(bumped: Set<string>): Promise<void> {
    if (this.republishDue.size === 0 || this.stopped) return;
    const due = [...this.republishDue];
    this.republishDue.clear();
    const sends: { deviceId: string; version: number; content: DesiredContent; json: string }[] = [];
    for (const deviceId of due) {
      const device = this.index.device(deviceId);
      if (bumped.has(deviceId) || !device || device.desiredVersion < 1) continue;
      const sent = this.published.get(deviceId);
      if (sent && sent.version === device.desiredVersion) {
        sends.push({ deviceId, ...sent });
        continue;
      }
      const content = desiredContent(this.index.placementsOf(deviceId), this.index.modelsByIdMap(), deviceLimits(device.limits));
      sends.push({ deviceId, version: device.desiredVersion, content, json: JSON.stringify(content) });
    }
    if (sends.length === 0) return;
    await this.publishMany(sends);
    this.counts.republishPasses += 1;
    this.counts.republished += sends.length;
    this.logger.info({ devices: sends.length }, 'desired states published again to devices that came online');
  }

  /** After a start: every version moves on (in the transaction that loads the index) and every desired state is published. */
  private async republishAll(): Promise<void> {
    const snapshot = await this.db.prisma.$transaction(async (tx) => {
      await tx.device.updateMany({ where: { desiredVersion: { gt: 0 } }, data: { desiredVersion: { increment: 1 } } });
      return snapshotQueries(tx);
    }, { timeout: 60_000, maxWait: 10_000 });
    this.index.replace(snapshot);
    this.loadedAll(Date.now());
    const models = this.index.modelsByIdMap();
    const sends: { deviceId: string; version: number; content: DesiredContent; json: string }[] = [];
    for (const device of snapshot[2]) {
      if (device.desiredVersion < 1) continue;
      const content = desiredContent(this.index.placementsOf(device.id), models, deviceLimits(device.limits));
      sends.push({ deviceId: device.id, version: device.desiredVersion, content, json: JSON.stringify(content) });
    }
    await this.publishMany(sends);
    if (sends.length > 0) this.logger.info({ devices: sends.length }, 'desired states published again after the start');
  }

  /** Device/model pairs reported `failed`, avoided for `failureBackoffMs` so the replica goes elsewhere. */
  private avoidList(models: Map<string, SnapshotModel>, now: number) {
    for (const s of this.index.failedStates()) {
      const model = models.get(s.modelName);
      if (!model) continue;
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
