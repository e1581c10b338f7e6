import type { ErrorCode } from '@flotilla/protocol';

/** What the control plane wants this device to hold (already parsed from the protocol message). */
export type DesiredModel = {
  /** Name clients use in requests, e.g. "qwen2.5-0.5b-q4". */
  name: string;
  /** http(s):// or file:// URL of the GGUF file. */
  source: string;
  sha256: string;
  sizeBytes?: number;
  /** Estimated resident memory when loaded; defaults to a multiple of the file size. */
  memoryBytes?: number;
  /** Pinned files are never evicted, even when no longer desired. */
  pinned: boolean;
  /** Keep it loaded (true) or only on disk, loaded on demand (false). Default true. */
  load?: boolean;
  /** Tokens per sequence and parallel sequences for its context. */
  contextSize?: number;
  parallel?: number;
};

export type DesiredState = {
  /** Monotonic version assigned by the control plane; older versions are ignored. */
  version: number;
  models: readonly DesiredModel[];
};

export type StoredFileState = 'partial' | 'complete' | 'verified';

/** A file in the model store, addressed by its sha256. */
export type StoredFile = {
  sha256: string;
  state: StoredFileState;
  bytesOnDisk: number;
  lastUsedAt: number;
  pinned: boolean;
  /** Set while an eviction has failed (the reason): still on disk and counted; the planner plans the eviction again. */
  evictFailed?: string;
};

/** `unloadFailed`: the runtime could not free it; it serves nothing but its memory is held until an unload succeeds. */
export type LoadedModel = { name: string; sha256: string; memoryBytes: number; unloadFailed?: boolean };

export type FailureStage = 'download' | 'verify' | 'load';

export type ModelFailure = {
  stage: FailureStage;
  code: ErrorCode;
  reason: string;
  attempts: number;
  /** Epoch ms before which the failed step is not retried. */
  retryAt: number;
  /** Attempts exhausted: not retried until a newer desired state arrives. */
  permanent: boolean;
};

export type ModelPhase = 'pending' | 'downloading' | 'verifying' | 'loading' | 'ready' | 'failed';

export type ModelStatus = {
  name: string;
  sha256: string;
  phase: ModelPhase;
  /** While downloading. */
  receivedBytes?: number;
  totalBytes?: number;
  /** When ready: whether it is in memory. */
  loaded?: boolean;
  /** When failed (or retrying). */
  code?: ErrorCode;
  reason?: string;
};

export type ActualState = {
  /** Version of the desired state currently being applied (0 before any). */
  appliedVersion: number;
  files: readonly StoredFile[];
  loaded: readonly LoadedModel[];
  /** Models unloaded by the idle timer: ready, loaded again on demand, not reloaded by the planner. */
  standby: readonly { name: string; sha256: string }[];
  /** Failures by model key (see modelKey). */
  failures: Readonly<Record<string, ModelFailure>>;
  /** Statuses last sent to the control plane by model name. */
  reported: Readonly<Record<string, ModelStatus>>;
  diskQuotaBytes: number;
  memoryBudgetBytes: number;
};

export type DownloadStep = { kind: 'download'; model: DesiredModel; resumeFrom: number };
export type VerifyStep = { kind: 'verify'; model: DesiredModel };
export type LoadStep = { kind: 'load'; model: DesiredModel; memoryBytes: number };
/** 'unload-failed': a desired model whose earlier unload failed; it stays registered (loaded again on demand). */
export type UnloadStep = { kind: 'unload'; name: string; sha256: string; reason: 'not-desired' | 'replaced' | 'unload-failed'; standby?: boolean };
export type EvictStep = { kind: 'evict'; sha256: string; bytes: number; reason: string };
/** A stored file whose pin (kept on disk with the file) differs from the desired state's. */
export type PinStep = { kind: 'pin'; name: string; sha256: string; pinned: boolean };
export type ReportStep = { kind: 'report'; version: number; statuses: readonly ModelStatus[] };
/** A desired model that cannot be held; recorded as a permanent failure without running anything. */
export type FailStep = { kind: 'fail'; model: DesiredModel; stage: FailureStage; code: ErrorCode; reason: string };

export type Step = DownloadStep | VerifyStep | LoadStep | UnloadStep | EvictStep | PinStep | ReportStep | FailStep;
export type StepKind = Step['kind'];

export function modelKey(model: { name: string; sha256: string }): string {
  return `${model.name}@${model.sha256}`;
}
