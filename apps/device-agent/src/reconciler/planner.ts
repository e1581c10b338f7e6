import {
  modelKey,
  type ActualState,
  type DesiredModel,
  type DesiredState,
  type ModelStatus,
  type StoredFile,
  type Step,
} from './types.js';

/** Resident memory assumed for a model whose catalog entry gives none: weights plus KV cache headroom. */
export const DEFAULT_MEMORY_FACTOR = 1.3;

export function estimateMemory(model: DesiredModel, file: StoredFile | undefined): number {
  if (model.memoryBytes !== undefined) return model.memoryBytes;
  const size = model.sizeBytes ?? file?.bytesOnDisk ?? 0;
  return Math.ceil(size * DEFAULT_MEMORY_FACTOR);
}

/** The status the control plane should see for each desired model. */
export function modelStatuses(desired: DesiredState, actual: ActualState, now: number): ModelStatus[] {
  const files = new Map(actual.files.map((file) => [file.sha256, file]));
  return desired.models.map((model): ModelStatus => {
    const base = { name: model.name, sha256: model.sha256 };
    const failure = actual.failures[modelKey(model)];
    if (failure?.permanent) return { ...base, phase: 'failed', code: failure.code, reason: failure.reason };
    const file = files.get(model.sha256);
    const isLoaded = actual.loaded.some((loaded) => loaded.name === model.name && loaded.sha256 === model.sha256 && loaded.unloadFailed !== true);
    const retrying = failure && failure.retryAt > now ? { code: failure.code, reason: `retrying after: ${failure.reason}` } : {};
    if (file?.state === 'verified') {
      if (isLoaded) return { ...base, phase: 'ready', loaded: true };
      if (model.load === false || isStandby(actual, model)) return { ...base, phase: 'ready', loaded: false };
      return { ...base, phase: 'loading', ...retrying };
    }
    if (file?.state === 'complete') return { ...base, phase: 'verifying', ...retrying };
    if (file?.state === 'partial') {
      const total = model.sizeBytes === undefined ? {} : { totalBytes: model.sizeBytes };
      return { ...base, phase: 'downloading', receivedBytes: file.bytesOnDisk, ...total, ...retrying };
    }
    return { ...base, phase: 'pending', ...retrying };
  });
}

function isStandby(actual: ActualState, model: { name: string; sha256: string }): boolean {
  return actual.standby.some((entry) => entry.name === model.name && entry.sha256 === model.sha256);
}

/** Byte counts change all the time while downloading; progress goes out separately, not as a plan change. */
function sameStatus(a: ModelStatus | undefined, b: ModelStatus): boolean {
  return a !== undefined && a.sha256 === b.sha256 && a.phase === b.phase && a.reason === b.reason && a.loaded === b.loaded;
}

/**
 * Pure: compares the desired and actual state and returns the steps that move one towards the other,
 * most urgent first. The executor runs the first step and plans again, so each list only needs to be
 * right for the state it was computed from. An empty list means converged (or waiting for a retry).
 */
export function planSteps(desired: DesiredState, actual: ActualState, now: number): Step[] {
  const steps: Step[] = [];
  const files = new Map(actual.files.map((file) => [file.sha256, file]));
  const desiredByName = new Map(desired.models.map((model) => [model.name, model]));
  const desiredShas = new Set(desired.models.map((model) => model.sha256));

  // Report first so the control plane sees every phase change before the next (possibly long) step.
  const statuses = modelStatuses(desired, actual, now);
  const reportedNames = Object.keys(actual.reported);
  const changed =
    statuses.some((status) => !sameStatus(actual.reported[status.name], status)) ||
    reportedNames.some((name) => !desiredByName.has(name)) ||
    (reportedNames.length === 0 && statuses.length === 0 && actual.appliedVersion !== desired.version);
  if (changed) steps.push({ kind: 'report', version: desired.version, statuses });

  // Free memory before anything else: models no longer desired, or desired with another file.
  for (const loaded of actual.loaded) {
    const wanted = desiredByName.get(loaded.name);
    if (!wanted) steps.push({ kind: 'unload', name: loaded.name, sha256: loaded.sha256, reason: 'not-desired' });
    else if (wanted.sha256 !== loaded.sha256) steps.push({ kind: 'unload', name: loaded.name, sha256: loaded.sha256, reason: 'replaced' });
    // Its memory is still held after a failed unload: free it before anything else is loaded.
    else if (loaded.unloadFailed === true) steps.push({ kind: 'unload', name: loaded.name, sha256: loaded.sha256, reason: 'unload-failed' });
  }
  // Idle-unloaded models are still registered for on-demand loading: forget the ones no longer desired.
  for (const entry of actual.standby) {
    const wanted = desiredByName.get(entry.name);
    if (wanted?.sha256 === entry.sha256) continue;
    steps.push({ kind: 'unload', name: entry.name, sha256: entry.sha256, reason: wanted ? 'replaced' : 'not-desired', standby: true });
  }
  const stillLoaded = actual.loaded.filter((loaded) => desiredByName.get(loaded.name)?.sha256 === loaded.sha256);
  let memoryFree = actual.memoryBudgetBytes - stillLoaded.reduce((sum, loaded) => sum + loaded.memoryBytes, 0);

  const loadedShas = new Set(actual.loaded.map((loaded) => loaded.sha256));
  const evictable = actual.files
    .filter((file) => !desiredShas.has(file.sha256) && !file.pinned && !loadedShas.has(file.sha256))
    .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
  let diskUsed = actual.files.reduce((sum, file) => sum + file.bytesOnDisk, 0);
  const evicted = new Set<string>();

  // The pin follows the desired state; a failed write leaves the store's flag as it was, so it is planned again.
  const pins: Step[] = [];
  for (const model of desired.models) {
    const file = files.get(model.sha256);
    if (file && file.pinned !== model.pinned) pins.push({ kind: 'pin', name: model.name, sha256: model.sha256, pinned: model.pinned });
  }

  const verifies: Step[] = [];
  const loads: Step[] = [];
  const downloads: Step[] = [];
  const fails: Step[] = [];
  const evicts: Step[] = [];

  for (const model of desired.models) {
    const failure = actual.failures[modelKey(model)];
    if (failure && (failure.permanent || failure.retryAt > now)) continue;
    const file = files.get(model.sha256);

    if (file?.state === 'verified') {
      const isLoaded = stillLoaded.some((loaded) => loaded.name === model.name && loaded.unloadFailed !== true);
      if (isLoaded || isStandby(actual, model) || model.load === false) continue;
      const memoryBytes = estimateMemory(model, file);
      if (memoryBytes > actual.memoryBudgetBytes) {
        fails.push({
          kind: 'fail',
          model,
          stage: 'load',
          code: 'INSUFFICIENT_MEMORY',
          reason: `needs ${memoryBytes} bytes of memory, the budget is ${actual.memoryBudgetBytes}`,
        });
      } else if (memoryBytes <= memoryFree) {
        loads.push({ kind: 'load', model, memoryBytes });
        memoryFree -= memoryBytes;
      }
      // Otherwise wait: memory frees up when an idle model is unloaded.
      continue;
    }
    if (file?.state === 'complete') {
      verifies.push({ kind: 'verify', model });
      continue;
    }

    const have = file?.bytesOnDisk ?? 0;
    const need = Math.max(0, (model.sizeBytes ?? 0) - have);
    if (model.sizeBytes !== undefined && model.sizeBytes > actual.diskQuotaBytes) {
      fails.push({ kind: 'fail', model, stage: 'download', code: 'DISK_QUOTA_EXCEEDED', reason: `needs ${model.sizeBytes} bytes of disk, the quota is ${actual.diskQuotaBytes}` });
      continue;
    }
    // Least recently used files that are not desired, not pinned and not loaded go first.
    while (diskUsed + need > actual.diskQuotaBytes) {
      const victim = evictable.find((candidate) => !evicted.has(candidate.sha256));
      if (!victim) break;
      evicted.add(victim.sha256);
      diskUsed -= victim.bytesOnDisk;
      evicts.push({ kind: 'evict', sha256: victim.sha256, bytes: victim.bytesOnDisk, reason: `disk quota: making room for ${model.name}` });
    }
    if (diskUsed + need > actual.diskQuotaBytes) {
      // Files of models being unloaded right now become evictable on the next plan: wait for them.
      const freeable = actual.files
        .filter((f) => !desiredShas.has(f.sha256) && !f.pinned && loadedShas.has(f.sha256) && !evicted.has(f.sha256))
        .reduce((sum, f) => sum + f.bytesOnDisk, 0);
      if (diskUsed - freeable + need <= actual.diskQuotaBytes) continue;
      fails.push({
        kind: 'fail',
        model,
        stage: 'download',
        code: 'DISK_QUOTA_EXCEEDED',
        reason: `disk quota exceeded: needs ${need} more bytes, ${actual.diskQuotaBytes - diskUsed} free after evicting every unpinned unused model`,
      });
      continue;
    }
    diskUsed += need;
    downloads.push({ kind: 'download', model, resumeFrom: have });
  }

  // An eviction that failed (the file is still on disk and counted) is planned again until it succeeds, unless the
  // file is wanted again. Last: a file that cannot be removed now must not hold up the desired models.
  const retries: Step[] = actual.files
    .filter((file) => file.evictFailed !== undefined && !desiredShas.has(file.sha256) && !loadedShas.has(file.sha256) && !evicted.has(file.sha256))
    .map((file) => ({ kind: 'evict', sha256: file.sha256, bytes: file.bytesOnDisk, reason: `retrying a failed eviction (${file.evictFailed})` }));

  return [...steps, ...pins, ...fails, ...evicts, ...verifies, ...loads, ...downloads, ...retries];
}
