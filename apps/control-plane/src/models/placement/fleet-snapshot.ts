import { PROTOCOL_VERSION, ResourceLimitsSchema, type DesiredModel, type DesiredState, type ResourceLimits } from '@flotilla/protocol';
import { z } from 'zod';
import type { Prisma } from '../../generated/prisma/client.js';
import type { PlannerDeployment, PlannerDevice, PlannerModel, PlannerModelState, PlannerPlacement } from './planner.js';

/** Limits sent when a device has none set (PRODUCT.md: 10 concurrent requests per device, queue bound 1000). */
export const DEFAULT_LIMITS: ResourceLimits = { maxParallelRequests: 10, maxQueueLength: 1000 };

/** What the scheduler reads from the database for one run. */
export const snapshotQueries = (prisma: Prisma.TransactionClient) =>
  Promise.all([
    prisma.deployment.findMany(),
    prisma.model.findMany(),
    prisma.device.findMany({ select: { id: true, status: true, labels: true, hardware: true, limits: true, desiredVersion: true } }),
    prisma.placement.findMany(),
    prisma.modelState.findMany({ select: { deviceId: true, modelName: true, sha256: true, state: true, loaded: true, errorCode: true } }),
  ]);
export type FleetSnapshot = Awaited<ReturnType<typeof snapshotQueries>>;
export type SnapshotModel = FleetSnapshot[1][number];
export type SnapshotDevice = FleetSnapshot[2][number];
export type SnapshotPlacement = FleetSnapshot[3][number];
export type SnapshotState = FleetSnapshot[4][number];

// The hardware column holds the hello's inventory (the registry adds `modelsOnDisk`) or the enrollment's. Read
// leniently: a device that reported nothing usable simply gets nothing placed.
const StoredHardware = z.object({
  memory: z.object({ totalBytes: z.number().nonnegative() }),
  disk: z.object({ freeBytes: z.number().nonnegative() }).optional(),
  gpus: z.array(z.object({ vramBytes: z.number().nonnegative() })).optional(),
  modelsOnDisk: z.array(z.object({ sha256: z.string() })).optional(),
});
const StoredLimits = ResourceLimitsSchema.partial();

/** Model states that mean "the file is on the device". */
const FILE_PRESENT = new Set(['verifying', 'loading', 'ready', 'unloading']);

export function toPlannerModel(m: SnapshotModel): PlannerModel {
  return { id: m.id, name: m.name, sha256: m.sha256, sizeBytes: Number(m.sizeBytes), memoryBytes: Number(m.memoryBytes), contextLength: m.contextLength };
}

export function toPlannerDeployment(d: FleetSnapshot[0][number]): PlannerDeployment {
  return {
    id: d.id,
    name: d.name,
    modelId: d.modelId,
    replicas: d.replicas,
    labelSelector: stringRecord(d.labelSelector),
    pinnedDeviceIds: d.pinnedDeviceIds,
    accelerator: d.accelerator,
    contextSize: d.contextSize,
    parallel: d.parallel,
  };
}

/** `states`: the device's own model states (other devices' are skipped, but callers index them by device). */
export function toPlannerDevice(d: SnapshotDevice, states: readonly SnapshotState[], models: Map<string, SnapshotModel>): PlannerDevice {
  const hw = StoredHardware.safeParse(d.hardware);
  const limits = deviceLimits(d.limits);
  const cached = new Set<string>();
  if (hw.success) for (const f of hw.data.modelsOnDisk ?? []) cached.add(f.sha256);
  for (const s of states) {
    if (s.deviceId !== d.id || !FILE_PRESENT.has(s.state)) continue;
    const sha = s.sha256 ?? models.get(s.modelName)?.sha256;
    if (sha) cached.add(sha);
  }
  return {
    id: d.id,
    status: d.status,
    labels: stringRecord(d.labels),
    hardware: hw.success
      ? {
          memoryTotalBytes: hw.data.memory.totalBytes,
          acceleratorBytes: (hw.data.gpus ?? []).reduce((sum, g) => sum + g.vramBytes, 0),
          // No disk figure reported: assume no room for new files rather than unlimited.
          diskFreeBytes: hw.data.disk?.freeBytes ?? 0,
        }
      : undefined,
    limits: { maxMemoryBytes: limits.maxMemoryBytes, diskQuotaBytes: limits.diskQuotaBytes },
    cachedSha256: [...cached].sort(),
  };
}

export function toPlannerPlacement(p: SnapshotPlacement): PlannerPlacement {
  return { deviceId: p.deviceId, modelId: p.modelId, deploymentId: p.deploymentId, loaded: p.loaded, pinned: p.pinned, contextSize: p.contextSize, parallel: p.parallel };
}

export function toPlannerModelState(s: FleetSnapshot[4][number]): PlannerModelState {
  return { deviceId: s.deviceId, modelName: s.modelName, sha256: s.sha256, state: s.state, loaded: s.loaded };
}

/** The device's limits column over the defaults; invalid stored values fall back to the defaults. */
export function deviceLimits(stored: unknown): ResourceLimits {
  const parsed = StoredLimits.safeParse(stored ?? {});
  const limits: ResourceLimits = { ...DEFAULT_LIMITS };
  if (!parsed.success) return limits;
  for (const [k, v] of Object.entries(parsed.data)) if (v !== undefined) (limits as Record<string, unknown>)[k] = v;
  return limits;
}

/**
 * [P-3.4] The desired state's content for a device (everything but version and ts), in a stable order so that
 * equal content gives equal JSON (the scheduler compares it to decide whether the version must move).
 */
export function desiredContent(
  placements: readonly PlannerPlacement[],
  models: Map<string, SnapshotModel>,
  limits: ResourceLimits,
): Pick<DesiredState, 'models' | 'limits'> {
  const list: DesiredModel[] = [];
  for (const p of placements) {
    const m = models.get(p.modelId);
    if (!m) continue;
    list.push({
      name: m.name,
      url: m.sourceUrl,
      sha256: m.sha256,
      sizeBytes: Number(m.sizeBytes),
      pinned: p.pinned,
      loaded: p.loaded,
      contextSize: p.contextSize ?? m.contextLength,
      parallel: p.parallel,
    });
  }
  list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { models: list, limits };
}

export function desiredMessage(version: number, content: Pick<DesiredState, 'models' | 'limits'>, now: number): DesiredState {
  return { v: PROTOCOL_VERSION, version, ts: now, ...content };
}

function stringRecord(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  }
  return out;
}
