/**
 * The placement planner: a pure function from what the fleet looks like and what was declared to the placements the
 * devices should hold. No I/O, no clock, no randomness: the same input gives the same output, so it is unit-tested
 * with plain data (see planner.spec.ts) and the scheduler service only loads, calls and writes.
 *
 * Rules, in order of importance:
 * - Eligibility: a replica may only be on an `online` device (a `reconnecting` one keeps what it has) that carries every label of the selector, is in the pin
 *   list when there is one, has an accelerator when the deployment requires one, and is not in `avoid` for the model.
 * - Holding: a replica on an `offline` device moves to another eligible device when one can take it; when none can, it
 *   stays where it is (placed, not ready), so a box cut off from the control plane keeps serving its model locally
 *   and is not told to unload it when it comes back.
 * - Stability: a placement that is still eligible and still fits stays where it is; the planner only fills gaps and
 *   trims surplus.
 * - Fit: the models on a device use at most its memory budget (maxMemoryBytes limit or RAM + VRAM) minus headroom;
 *   files that still have to be downloaded fit in the free disk (and the disk quota) minus headroom.
 * - Spread: one replica of a deployment per device (a device holds a model once), new replicas go first to devices
 *   that already hold the file, then (accelerator `preferred`) devices with a GPU, then the least loaded.
 * - Rollout: when a deployment's model changes, replicas of the new model are added first; replicas of the old model
 *   are removed only as new ones report `ready`. When there is no room for a new replica anywhere, one old replica is
 *   swapped in place at a time (the only case where capacity dips by one).
 */

import type { AcceleratorNeed, DeploymentPlan, UnplacedReason } from '@flotilla/protocol';

/**
 * `reconnecting`: stored as online by an earlier control-plane process, not back on this one yet. Its replicas stay
 * placed (the reconnect grace decides whether it is gone) but count as not ready, and it gets no new ones.
 */
export type DeviceStatus = 'online' | 'reconnecting' | 'offline' | 'draining' | 'revoked';
export type { AcceleratorNeed };

export interface PlannerModel {
  id: string;
  name: string;
  sha256: string;
  sizeBytes: number;
  /** RAM + VRAM needed to serve it */
  memoryBytes: number;
  contextLength: number;
}

export interface PlannerDeployment {
  id: string;
  name: string;
  modelId: string;
  replicas: number;
  labelSelector: Record<string, string>;
  /** not empty: only these devices are eligible */
  pinnedDeviceIds: string[];
  accelerator: AcceleratorNeed;
  contextSize: number | null;
  parallel: number;
}

export interface PlannerDevice {
  id: string;
  status: DeviceStatus;
  labels: Record<string, string>;
  /** undefined: the device never reported its hardware, so nothing can be placed on it */
  hardware:
    | {
        memoryTotalBytes: number;
        /** total VRAM over all GPUs; 0 without an accelerator */
        acceleratorBytes: number;
        diskFreeBytes: number;
      }
    | undefined;
  limits?: { maxMemoryBytes?: number | undefined; diskQuotaBytes?: number | undefined } | undefined;
  /** sha256 of the model files the device holds on disk (hello's models, model states) */
  cachedSha256: readonly string[];
}

export interface PlannerPlacement {
  deviceId: string;
  modelId: string;
  /** null: placed by hand; the planner keeps it and counts its memory, never moves it */
  deploymentId: string | null;
  loaded: boolean;
  pinned: boolean;
  contextSize: number | null;
  parallel: number;
}

export interface PlannerModelState {
  deviceId: string;
  modelName: string;
  sha256: string | null;
  state: 'pending' | 'downloading' | 'verifying' | 'loading' | 'ready' | 'unloading' | 'failed';
  loaded: boolean;
}

export interface PlannerOptions {
  /** share of the memory budget kept free (default 0.1) */
  memoryHeadroomFraction: number;
  /** at least this much memory kept free (default 256 MiB) */
  memoryHeadroomBytes: number;
  /** disk kept free on top of the files (default 512 MiB) */
  diskHeadroomBytes: number;
}

export const DEFAULT_PLANNER_OPTIONS: PlannerOptions = {
  memoryHeadroomFraction: 0.1,
  memoryHeadroomBytes: 256 * 1024 * 1024,
  diskHeadroomBytes: 512 * 1024 * 1024,
};

export interface PlanInput {
  deployments: readonly PlannerDeployment[];
  models: readonly PlannerModel[];
  devices: readonly PlannerDevice[];
  placements: readonly PlannerPlacement[];
  modelStates: readonly PlannerModelState[];
  /** (device, model) pairs not to use, e.g. after the device failed to load the model */
  avoid?: readonly { deviceId: string; modelId: string }[];
  options?: Partial<PlannerOptions>;
}

// The deployment plan is what `GET /api/v1/scheduler` answers: its shape is the REST contract's.
export type { DeploymentPlan, UnplacedReason };

export interface PlanResult {
  /** the complete new set of placements (hand-placed ones included) */
  placements: PlannerPlacement[];
  added: PlannerPlacement[];
  removed: PlannerPlacement[];
  /** same device and model, other settings */
  updated: PlannerPlacement[];
  /** devices whose set of placements changed (sorted) */
  changedDeviceIds: string[];
  deployments: DeploymentPlan[];
}


interface DeviceBudget {
  device: PlannerDevice;
  memoryBudget: number;
  memoryUsed: number;
  diskBudget: number;
  /** bytes of placed files the device does not hold yet */
  diskUsed: number;
  quota: number;
  quotaUsed: number;
  /** models placed on it, by model id */
  models: Set<string>;
}

interface DeploymentWork {
  deployment: PlannerDeployment;
  model: PlannerModel | undefined;
  current: PlannerPlacement[];
  previous: PlannerPlacement[];
}

const pairKey = (deviceId: string, modelId: string) => `${deviceId}\u0000${modelId}`;

/** The mutable state of one planning run: what each device holds so far. */
class Allocation {
  readonly budgets: Map<string, DeviceBudget>;
  readonly chosen = new Map<string, PlannerPlacement>();

  constructor(
    devices: readonly PlannerDevice[],
    options: PlannerOptions,
    private readonly models: Map<string, PlannerModel>,
  ) {
    this.budgets = new Map(devices.map((d) => [d.id, budgetOf(d, options)]));
  }

  holds(budget: DeviceBudget, model: PlannerModel): boolean {
    return budget.device.cachedSha256.includes(model.sha256);
  }

  fitProblem(budget: DeviceBudget, model: PlannerModel): UnplacedReason | undefined {
    if (budget.memoryUsed + model.memoryBytes > budget.memoryBudget) return 'memory';
    if (budget.quotaUsed + model.sizeBytes > budget.quota) return 'disk';
    if (!this.holds(budget, model) && budget.diskUsed + model.sizeBytes > budget.diskBudget) return 'disk';
    return undefined;
  }

  /** Why `model` cannot go (or, `keeping`/`holding`, stay) on `budget`'s device for `deployment` now, or undefined when it can. */
  problem(budget: DeviceBudget, deployment: PlannerDeployment, model: PlannerModel, avoid: Set<string>, mode: EligibilityMode = 'new'): UnplacedReason | undefined {
    return eligibility(budget.device, deployment, model, avoid, mode) ?? (budget.models.has(model.id) ? 'holds-model' : this.fitProblem(budget, model));
  }

  add(placement: PlannerPlacement): void {
    const budget = this.budgets.get(placement.deviceId);
    const model = this.models.get(placement.modelId);
    if (!budget || !model) throw new Error(`planner: unknown device or model in ${placement.deviceId}/${placement.modelId}`);
    budget.memoryUsed += model.memoryBytes;
    budget.quotaUsed += model.sizeBytes;
    if (!this.holds(budget, model)) budget.diskUsed += model.sizeBytes;
    budget.models.add(model.id);
    this.chosen.set(pairKey(placement.deviceId, placement.modelId), placement);
  }

  remove(placement: PlannerPlacement): void {
    const budget = this.budgets.get(placement.deviceId);
    const model = this.models.get(placement.modelId);
    if (!budget || !model || !this.chosen.delete(pairKey(placement.deviceId, placement.modelId))) return;
    budget.memoryUsed -= model.memoryBytes;
    budget.quotaUsed -= model.sizeBytes;
    if (!this.holds(budget, model)) budget.diskUsed -= model.sizeBytes;
    budget.models.delete(model.id);
  }
}

export function planPlacements(input: PlanInput): PlanResult {
  const options = { ...DEFAULT_PLANNER_OPTIONS, ...input.options };
  const models = new Map(input.models.map((m) => [m.id, m]));
  const avoid = new Set((input.avoid ?? []).map((a) => pairKey(a.deviceId, a.modelId)));
  const devices = [...input.devices].sort((a, b) => compare(a.id, b.id));
  const alloc = new Allocation(devices, options, models);
  const ready = readySet(input.modelStates, input.models, devices);
  const isReady = (p: PlannerPlacement) => ready.has(pairKey(p.deviceId, p.modelId));
  const keepFirst = (a: PlannerPlacement, b: PlannerPlacement) => Number(isReady(b)) - Number(isReady(a)) || compare(a.deviceId, b.deviceId);
  const byDeployment = new Map<string, PlannerPlacement[]>();
  for (const p of input.placements) {
    if (p.deploymentId === null) continue;
    const list = byDeployment.get(p.deploymentId) ?? [];
    list.push(p);
    byDeployment.set(p.deploymentId, list);
  }

  // 1. Hand-placed rows stay and take their room first. Rows of deployments that are gone are dropped.
  for (const p of input.placements) {
    if (p.deploymentId === null && alloc.budgets.has(p.deviceId) && models.has(p.modelId)) alloc.add({ ...p });
  }

  // 2. Existing replicas of the current model stay where they are while still eligible and fitting (stability
  //    before balance): ready ones first, so a scale-down keeps serving replicas.
  const work: DeploymentWork[] = [...input.deployments]
    .sort((a, b) => compare(a.name, b.name) || compare(a.id, b.id))
    .map((deployment) => ({ deployment, model: models.get(deployment.modelId), current: [], previous: [] }));
  for (const w of work) {
    const { deployment, model } = w;
    if (!model) continue;
    const existing = (byDeployment.get(deployment.id) ?? []).filter((p) => p.modelId === model.id).sort(keepFirst);
    for (const p of existing) {
      const budget = alloc.budgets.get(p.deviceId);
      if (w.current.length >= deployment.replicas || !budget || alloc.problem(budget, deployment, model, avoid, 'keeping')) continue;
      const placement = replicaOn(p.deviceId, deployment, model);
      alloc.add(placement);
      w.current.push(placement);
    }
  }

  // 3. Rollout: replicas of a previous model stay, on online (or reconnecting) devices, until enough current ones are ready.
  for (const w of work) {
    let keep = Math.max(0, w.deployment.replicas - w.current.filter(isReady).length);
    const previous = (byDeployment.get(w.deployment.id) ?? []).filter((p) => p.modelId !== w.deployment.modelId).sort(keepFirst);
    for (const p of previous) {
      const budget = alloc.budgets.get(p.deviceId);
      const model = models.get(p.modelId);
      if (keep === 0 || !budget || !model || (budget.device.status !== 'online' && budget.device.status !== 'reconnecting')) continue;
      if (budget.models.has(model.id) || alloc.fitProblem(budget, model)) continue;
      const placement = { ...p };
      alloc.add(placement);
      w.previous.push(placement);
      keep -= 1;
    }
  }

  // 4. New replicas fill the gaps. Placing a replica changes only its own device's budget, and that device then holds
  //    the model (no longer a candidate for this deployment): one pass ranks the candidates and the best ones are
  //    taken in order, which is what picking the best, placing, and looking again would give.
  const statuses: DeploymentPlan[] = [];
  for (const w of work) {
    const { deployment, model } = w;
    let reasons: Partial<Record<UnplacedReason, number>> = {};
    while (model && w.current.length < deployment.replicas) {
      const best = bestCandidates(alloc, deployment, model, avoid, deployment.replicas - w.current.length);
      for (const b of best) {
        const placement = replicaOn(b.device.id, deployment, model);
        alloc.add(placement);
        w.current.push(placement);
      }
      if (best.length > 0) continue;
      // No room anywhere. During a rollout with no new replica on its way, swap one old replica in place.
      if (!w.current.some((p) => !isReady(p)) && swapOne(w, alloc, avoid)) continue;
      reasons = {};
      for (const b of alloc.budgets.values()) {
        const problem = alloc.problem(b, deployment, model, avoid);
        if (problem) reasons[problem] = (reasons[problem] ?? 0) + 1;
      }
      break;
    }
    // 5. Still short: replicas on offline devices that no other device could take stay where they are (stability
    //    beats an empty desired state the device would only act on when it is back, by unloading a model it serves).
    if (model && w.current.length < deployment.replicas) {
      const existing = (byDeployment.get(deployment.id) ?? []).filter((p) => p.modelId === model.id).sort(keepFirst);
      for (const p of existing) {
        const budget = alloc.budgets.get(p.deviceId);
        if (w.current.length >= deployment.replicas || !budget || alloc.problem(budget, deployment, model, avoid, 'holding')) continue;
        const placement = replicaOn(p.deviceId, deployment, model);
        alloc.add(placement);
        w.current.push(placement);
      }
    }
    statuses.push(deploymentStatus(w, isReady, reasons, alloc.budgets.size));
  }

  return diff(input.placements, [...alloc.chosen.values()], statuses);
}

/** The `count` best devices for a new replica (in rank order), in one pass over the fleet: a full sort per replica is too slow on large fleets. */
function bestCandidates(alloc: Allocation, deployment: PlannerDeployment, model: PlannerModel, avoid: Set<string>, count: number): DeviceBudget[] {
  const top: DeviceBudget[] = [];
  for (const b of alloc.budgets.values()) {
    if (top.length === count && rankCandidates(b, top[count - 1] as DeviceBudget, model, deployment) >= 0) continue;
    if (alloc.problem(b, deployment, model, avoid) !== undefined) continue;
    let i = top.length;
    while (i > 0 && rankCandidates(b, top[i - 1] as DeviceBudget, model, deployment) < 0) i -= 1;
    top.splice(i, 0, b);
    if (top.length > count) top.pop();
  }
  return top;
}

/** Replaces one previous-model replica by a current-model one on the same device, if that makes it fit. */
function swapOne(w: DeploymentWork, alloc: Allocation, avoid: Set<string>): boolean {
  const model = w.model;
  if (!model) return false;
  // The last kept is the least useful (not ready, highest device id).
  for (const old of [...w.previous].reverse()) {
    const budget = alloc.budgets.get(old.deviceId);
    if (!budget || eligibility(budget.device, w.deployment, model, avoid) || budget.models.has(model.id)) continue;
    alloc.remove(old);
    if (alloc.fitProblem(budget, model) === undefined) {
      w.previous.splice(w.previous.indexOf(old), 1);
      const placement = replicaOn(old.deviceId, w.deployment, model);
      alloc.add(placement);
      w.current.push(placement);
      return true;
    }
    alloc.add(old);
  }
  return false;
}

function deploymentStatus(
  w: DeploymentWork,
  isReady: (p: PlannerPlacement) => boolean,
  reasons: Partial<Record<UnplacedReason, number>>,
  deviceCount: number,
): DeploymentPlan {
  const { deployment, model } = w;
  const status: DeploymentPlan = {
    deploymentId: deployment.id,
    name: deployment.name,
    modelId: deployment.modelId,
    wanted: deployment.replicas,
    placed: w.current.length,
    deviceIds: w.current.map((p) => p.deviceId).sort(compare),
    ready: w.current.filter(isReady).length,
    previous: w.previous.length,
    rollingOut: w.previous.length > 0,
  };
  const missing = deployment.replicas - w.current.length;
  if (missing > 0) {
    status.unsatisfied = {
      missing,
      devices: reasons,
      message: model
        ? `${missing} of ${deployment.replicas} replica${deployment.replicas === 1 ? '' : 's'} of ${model.name} cannot be placed: ${describeReasons(reasons, deviceCount)}`
        : `model ${deployment.modelId} is not in the catalog`,
    };
  }
  return status;
}

const REASON_TEXT: Record<UnplacedReason, string> = {
  offline: 'not online',
  reconnecting: 'not back since the control plane started',
  labels: 'labels do not match the selector',
  'not-pinned': 'not in the pin list',
  'no-accelerator': 'no accelerator',
  'no-hardware': 'hardware not reported yet',
  memory: 'not enough free memory',
  disk: 'not enough free disk',
  'holds-model': 'already hold a replica of this model',
  avoided: 'recently failed to load it',
};

function describeReasons(reasons: Partial<Record<UnplacedReason, number>>, deviceCount: number): string {
  if (deviceCount === 0) return 'no devices are enrolled';
  const parts = (Object.entries(reasons) as [UnplacedReason, number][])
    .sort((a, b) => b[1] - a[1] || compare(a[0], b[0]))
    .map(([reason, n]) => `${n} device${n === 1 ? '' : 's'} ${REASON_TEXT[reason]}`);
  return parts.length ? parts.join(', ') : 'no eligible device';
}

function budgetOf(device: PlannerDevice, options: PlannerOptions): DeviceBudget {
  const hw = device.hardware;
  const total = hw ? hw.memoryTotalBytes + hw.acceleratorBytes : 0;
  const limit = device.limits?.maxMemoryBytes;
  const memory = limit !== undefined ? Math.min(limit, total) : total;
  const headroom = Math.max(memory * options.memoryHeadroomFraction, options.memoryHeadroomBytes);
  return {
    device,
    memoryBudget: Math.max(0, memory - headroom),
    memoryUsed: 0,
    diskBudget: hw ? Math.max(0, hw.diskFreeBytes - options.diskHeadroomBytes) : 0,
    diskUsed: 0,
    quota: device.limits?.diskQuotaBytes ?? Number.POSITIVE_INFINITY,
    quotaUsed: 0,
    models: new Set(),
  };
}

/**
 * `new`: a replica placed now; `keeping`: a replica the device already has (a reconnecting device keeps it);
 * `holding`: a replica the device already has that no other device could take (an offline device keeps it too).
 */
type EligibilityMode = 'new' | 'keeping' | 'holding';

function eligibility(
  device: PlannerDevice,
  deployment: PlannerDeployment,
  model: PlannerModel,
  avoid: Set<string>,
  mode: EligibilityMode = 'new',
): UnplacedReason | undefined {
  // A reconnecting device may be dead: it keeps its replicas through the reconnect grace but gets no new ones.
  if (device.status === 'reconnecting') {
    if (mode === 'new') return 'reconnecting';
  } else if (device.status === 'offline') {
    if (mode !== 'holding') return 'offline';
  } else if (device.status !== 'online') return 'offline';
  if (deployment.pinnedDeviceIds.length > 0 && !deployment.pinnedDeviceIds.includes(device.id)) return 'not-pinned';
  for (const k in deployment.labelSelector) {
    if (device.labels[k] !== deployment.labelSelector[k]) return 'labels';
  }
  if (!device.hardware) return 'no-hardware';
  if (deployment.accelerator === 'required' && device.hardware.acceleratorBytes <= 0) return 'no-accelerator';
  if (avoid.size > 0 && avoid.has(pairKey(device.id, model.id))) return 'avoided';
  return undefined;
}

/** Better candidates sort first: holds the file, has a GPU (when wanted), fewest models, most memory left, id. */
function rankCandidates(a: DeviceBudget, b: DeviceBudget, model: PlannerModel, deployment: PlannerDeployment): number {
  const cached = (x: DeviceBudget) => (x.device.cachedSha256.includes(model.sha256) ? 0 : 1);
  const gpu = (x: DeviceBudget) => (deployment.accelerator !== 'any' && (x.device.hardware?.acceleratorBytes ?? 0) > 0 ? 0 : 1);
  return (
    cached(a) - cached(b) ||
    gpu(a) - gpu(b) ||
    a.models.size - b.models.size ||
    b.memoryBudget - b.memoryUsed - (a.memoryBudget - a.memoryUsed) ||
    compare(a.device.id, b.device.id)
  );
}

function replicaOn(deviceId: string, deployment: PlannerDeployment, model: PlannerModel): PlannerPlacement {
  return {
    deviceId,
    modelId: model.id,
    deploymentId: deployment.id,
    loaded: true,
    pinned: false,
    contextSize: deployment.contextSize,
    parallel: deployment.parallel,
  };
}

/** (device, model) pairs reported ready and in memory, with the catalog's file (same sha256), on online devices. */
function readySet(states: readonly PlannerModelState[], models: readonly PlannerModel[], devices: readonly PlannerDevice[]): Set<string> {
  const byName = new Map(models.map((m) => [m.name, m]));
  // A reconnecting device's last report is an earlier process's knowledge, an offline one's is stale (it may serve
  // locally, not for the fleet): neither is a replica that serves now.
  const notServing = new Set(devices.filter((d) => d.status === 'reconnecting' || d.status === 'offline').map((d) => d.id));
  const ready = new Set<string>();
  for (const s of states) {
    const model = byName.get(s.modelName);
    if (!model || notServing.has(s.deviceId) || s.state !== 'ready' || !s.loaded || (s.sha256 !== null && s.sha256 !== model.sha256)) continue;
    ready.add(pairKey(s.deviceId, model.id));
  }
  return ready;
}

function samePlacement(a: PlannerPlacement, b: PlannerPlacement): boolean {
  return (
    a.deploymentId === b.deploymentId && a.loaded === b.loaded && a.pinned === b.pinned && a.contextSize === b.contextSize && a.parallel === b.parallel
  );
}

function diff(before: readonly PlannerPlacement[], after: PlannerPlacement[], deployments: DeploymentPlan[]): PlanResult {
  const old = new Map(before.map((p) => [pairKey(p.deviceId, p.modelId), p]));
  const next = new Map(after.map((p) => [pairKey(p.deviceId, p.modelId), p]));
  const added: PlannerPlacement[] = [];
  const updated: PlannerPlacement[] = [];
  const removed: PlannerPlacement[] = [];
  for (const [k, p] of next) {
    const was = old.get(k);
    if (!was) added.push(p);
    else if (!samePlacement(was, p)) updated.push(p);
  }
  for (const [k, p] of old) if (!next.has(k)) removed.push(p);
  const order = (a: PlannerPlacement, b: PlannerPlacement) => compare(a.deviceId, b.deviceId) || compare(a.modelId, b.modelId);
  const changed = new Set([...added, ...updated, ...removed].map((p) => p.deviceId));
  return {
    placements: after.sort(order),
    added: added.sort(order),
    removed: removed.sort(order),
    updated: updated.sort(order),
    changedDeviceIds: [...changed].sort(compare),
    deployments,
  };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
