import type { Prisma } from '../../generated/prisma/client.js';
import { chunkRows } from '../../platform/database/bulk.js';
import {
  snapshotQueries,
  toPlannerDeployment,
  toPlannerDevice,
  toPlannerModel,
  toPlannerModelState,
  toPlannerPlacement,
  type FleetSnapshot,
  type SnapshotDevice,
  type SnapshotModel,
  type SnapshotState,
} from './fleet-snapshot.js';
import type { DeviceStatus, PlannerDeployment, PlannerDevice, PlannerModel, PlannerModelState, PlannerPlacement } from './planner.js';

type StoredStatus = SnapshotDevice['status'];

interface IndexedDevice {
  row: SnapshotDevice;
  /** the row's planner view (hardware parsed, files on disk), rebuilt when the row or its model states change */
  planner: PlannerDevice | undefined;
}

/** What the planner needs, taken from the index (devices with their stored status). */
export interface IndexView {
  deployments: PlannerDeployment[];
  models: PlannerModel[];
  modelsById: Map<string, SnapshotModel>;
  modelsByName: Map<string, SnapshotModel>;
  devices: { device: PlannerDevice; stored: StoredStatus }[];
  placements: PlannerPlacement[];
  modelStates: PlannerModelState[];
}

const SELECT_DEVICE = { id: true, status: true, labels: true, hardware: true, limits: true, desiredVersion: true } as const;
const SELECT_STATE = { deviceId: true, modelName: true, sha256: true, state: true, loaded: true, errorCode: true } as const;

/**
 * The scheduler's in-memory copy of the fleet: devices, their model states, placements, deployments and the catalog,
 * indexed by device and model. Loaded whole once at start; afterwards fleet events mark what changed and a planning run
 * re-reads only those rows (in chunked `IN` queries), so a run at 10,000 devices does not reload the fleet.
 *
 * The database stays the source of truth. Events are emitted after their transaction commits, so a row re-read
 * because of one is at least as new as the event. The scheduler's own placement writes are applied here only after
 * their transaction commits; a write that fails (or may have half-happened) asks for a full reload, as does a
 * resync (periodic, and on `POST /api/v1/scheduler/run`) that covers rows written behind the events' back.
 */
export class FleetIndex {
  private readonly devices = new Map<string, IndexedDevice>();
  private readonly states = new Map<string, Map<string, SnapshotState>>();
  private readonly placements = new Map<string, Map<string, PlannerPlacement>>();
  private deployments: FleetSnapshot[0] = [];
  private models: SnapshotModel[] = [];
  private modelsById = new Map<string, SnapshotModel>();
  private modelsByName = new Map<string, SnapshotModel>();

  private readonly dirtyDevices = new Set<string>();
  private readonly dirtyStates = new Set<string>();
  private catalogDirty = false;
  /** device rows read since `takeReloaded()` (all of them after a full load) */
  private reloaded: Set<string> | 'all' = 'all';
  private fullLoadDue = true;
  /** moves on every change that can alter a plan; a run compares it with the one it planned at */
  private generation = 0;

  get loaded(): boolean {
    return !this.fullLoadDue;
  }

  /** A counter that moves whenever the fleet as the planner sees it may have changed. */
  get changes(): number {
    return this.generation;
  }

  get size(): number {
    return this.devices.size;
  }

  /** Replaces everything with a snapshot read in one go (e.g. in the transaction that bumped the versions). */
  replace(snapshot: FleetSnapshot): void {
    const [deployments, models, devices, placements, states] = snapshot;
    this.devices.clear();
    this.states.clear();
    this.placements.clear();
    this.dirtyDevices.clear();
    this.dirtyStates.clear();
    this.setCatalog(deployments, models);
    for (const s of states) this.stateMap(s.deviceId).set(s.modelName, s);
    for (const d of devices) this.devices.set(d.id, { row: d, planner: undefined });
    for (const p of placements) this.placementMap(p.deviceId).set(p.modelId, toPlannerPlacement(p));
    this.catalogDirty = false;
    this.fullLoadDue = false;
    this.reloaded = 'all';
    this.generation += 1;
  }

  /** Reads what is due from the database: everything after `invalidate()`, else only the rows events marked. */
  async refresh(prisma: Prisma.TransactionClient): Promise<'full' | 'partial' | 'none'> {
    if (this.fullLoadDue) {
      this.replace(await snapshotQueries(prisma));
      return 'full';
    }
    if (!this.catalogDirty && this.dirtyDevices.size === 0 && this.dirtyStates.size === 0) return 'none';
    // Taken before reading: a mark made while the queries run stays for the next refresh.
    const deviceIds = [...this.dirtyDevices];
    const stateIds = [...this.dirtyStates];
    const catalog = this.catalogDirty;
    this.dirtyDevices.clear();
    this.dirtyStates.clear();
    this.catalogDirty = false;
    try {
      if (catalog) {
        const [deployments, models] = await Promise.all([prisma.deployment.findMany(), prisma.model.findMany()]);
        this.setCatalog(deployments, models);
        // Placements of a deleted deployment or model went with it (ON DELETE CASCADE).
        const deploymentIds = new Set(deployments.map((d) => d.id));
        for (const [deviceId, map] of this.placements) {
          for (const [modelId, p] of map) {
            if (!this.modelsById.has(modelId) || (p.deploymentId !== null && !deploymentIds.has(p.deploymentId))) map.delete(modelId);
          }
          if (map.size === 0) this.placements.delete(deviceId);
        }
      }
      for (const chunk of chunkRows(deviceIds, 1)) {
        const rows = await prisma.device.findMany({ where: { id: { in: chunk } }, select: SELECT_DEVICE });
        const found = new Set<string>();
        for (const row of rows) {
          found.add(row.id);
          this.devices.set(row.id, { row, planner: undefined });
          if (this.reloaded !== 'all') this.reloaded.add(row.id);
        }
        for (const id of chunk) {
          if (found.has(id)) continue;
          // gone: its placements and model states went with it
          this.devices.delete(id);
          this.placements.delete(id);
          this.states.delete(id);
        }
      }
      for (const chunk of chunkRows(stateIds, 1)) {
        const rows = await prisma.modelState.findMany({ where: { deviceId: { in: chunk } }, select: SELECT_STATE });
        for (const id of chunk) this.states.delete(id);
        for (const s of rows) this.stateMap(s.deviceId).set(s.modelName, s);
        for (const id of chunk) {
          const device = this.devices.get(id);
          if (device) device.planner = undefined;
        }
      }
    } catch (error) {
      // What was read is lost halfway: read it all again next time.
      this.fullLoadDue = true;
      throw error;
    }
    this.generation += 1;
    return 'partial';
  }

  /** Everything is read again on the next refresh (a write that may have diverged, a resync). */
  invalidate(): void {
    this.fullLoadDue = true;
    this.generation += 1;
  }

  /** A device row changed (enrolled, labels, hardware, limits): re-read it. */
  markDevice(deviceId: string): void {
    this.dirtyDevices.add(deviceId);
    this.generation += 1;
  }

  /** The device's model states changed: re-read them. */
  markStates(deviceId: string): void {
    this.dirtyStates.add(deviceId);
    this.generation += 1;
  }

  /** Deployments or the catalog changed: re-read both (a few hundred rows at most). */
  markCatalog(): void {
    this.catalogDirty = true;
    this.generation += 1;
  }

  /**
   * A status change announced by the registry after its commit: applied as is, no read. The planner's inputs moved
   * (also when the stored status is the same: the device may be back from `reconnecting`).
   */
  setStatus(deviceId: string, status: DeviceStatus): void {
    const device = this.devices.get(deviceId);
    if (!device) {
      this.markDevice(deviceId);
      return;
    }
    if (status !== 'reconnecting' && device.row.status !== status) {
      device.row = { ...device.row, status };
      device.planner = undefined;
    }
    this.generation += 1;
  }

  /** The planner's input, devices in id order with their stored status. */
  view(): IndexView {
    const devices: IndexView['devices'] = [];
    for (const d of this.devices.values()) {
      d.planner ??= toPlannerDevice(d.row, [...(this.states.get(d.row.id)?.values() ?? [])], this.modelsByName);
      devices.push({ device: d.planner, stored: d.row.status });
    }
    const placements: PlannerPlacement[] = [];
    for (const map of this.placements.values()) for (const p of map.values()) placements.push(p);
    const modelStates: PlannerModelState[] = [];
    for (const map of this.states.values()) for (const s of map.values()) modelStates.push(toPlannerModelState(s));
    return {
      deployments: this.deployments.map(toPlannerDeployment),
      models: this.models.map(toPlannerModel),
      modelsById: this.modelsById,
      modelsByName: this.modelsByName,
      devices,
      placements,
      modelStates,
    };
  }

  /** The device rows read since the last call (their limits may have changed), or 'all' after a full load. */
  takeReloaded(): Set<string> | 'all' {
    const reloaded = this.reloaded;
    this.reloaded = new Set();
    return reloaded;
  }

  modelsByIdMap(): Map<string, SnapshotModel> {
    return this.modelsById;
  }

  device(deviceId: string): SnapshotDevice | undefined {
    return this.devices.get(deviceId)?.row;
  }

  deviceIds(): IterableIterator<string> {
    return this.devices.keys();
  }

  placementsOf(deviceId: string): PlannerPlacement[] {
    return [...(this.placements.get(deviceId)?.values() ?? [])];
  }

  /** Model states reported `failed` (for the avoid list). */
  *failedStates(): Generator<SnapshotState> {
    for (const map of this.states.values()) for (const s of map.values()) if (s.state === 'failed') yield s;
  }

  /** Applies a committed placement write: the new set for the changed devices and their new versions. */
  applyWrite(placements: { added: PlannerPlacement[]; updated: PlannerPlacement[]; removed: PlannerPlacement[] }, versions: Map<string, number>): void {
    for (const p of placements.removed) {
      const map = this.placements.get(p.deviceId);
      map?.delete(p.modelId);
      if (map?.size === 0) this.placements.delete(p.deviceId);
    }
    for (const p of [...placements.updated, ...placements.added]) this.placementMap(p.deviceId).set(p.modelId, { ...p });
    for (const [id, version] of versions) {
      const device = this.devices.get(id);
      if (device) device.row = { ...device.row, desiredVersion: version };
    }
  }

  private setCatalog(deployments: FleetSnapshot[0], models: SnapshotModel[]): void {
    this.deployments = deployments;
    this.models = models;
    const byName = new Map(models.map((m) => [m.name, m]));
    // a model's file (sha256) counts as on disk through the catalog: planner views depend on it
    const catalogMoved = byName.size !== this.modelsByName.size || models.some((m) => this.modelsByName.get(m.name)?.sha256 !== m.sha256);
    this.modelsById = new Map(models.map((m) => [m.id, m]));
    this.modelsByName = byName;
    if (catalogMoved) for (const d of this.devices.values()) d.planner = undefined;
  }

  private stateMap(deviceId: string): Map<string, SnapshotState> {
    let map = this.states.get(deviceId);
    if (!map) {
      map = new Map();
      this.states.set(deviceId, map);
    }
    return map;
  }

  private placementMap(deviceId: string): Map<string, PlannerPlacement> {
    let map = this.placements.get(deviceId);
    if (!map) {
      map = new Map();
      this.placements.set(deviceId, map);
    }
    return map;
  }
}
