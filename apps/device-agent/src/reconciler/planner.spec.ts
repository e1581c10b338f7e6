import { describe, expect, it } from 'vitest';
import { isNewerDesired, nextFailure, runStep, stageOf, type StepHandlers } from './executor.js';
import { estimateMemory, modelStatuses, planSteps } from './planner.js';
import { modelKey, type ActualState, type DesiredModel, type DesiredState, type ModelStatus, type Step, type StoredFile } from './types.js';

const NOW = 1_000_000;
const MB = 1_000_000;

function model(name: string, overrides: Partial<DesiredModel> = {}): DesiredModel {
  return { name, source: `http://127.0.0.1/${name}.gguf`, sha256: `sha-${name}`, sizeBytes: 10 * MB, memoryBytes: 20 * MB, pinned: false, ...overrides };
}

function file(sha256: string, overrides: Partial<StoredFile> = {}): StoredFile {
  return { sha256, state: 'verified', bytesOnDisk: 10 * MB, lastUsedAt: 0, pinned: false, ...overrides };
}

function desired(models: DesiredModel[], version = 1): DesiredState {
  return { version, models };
}

function actual(overrides: Partial<ActualState> = {}): ActualState {
  return {
    appliedVersion: 1,
    files: [],
    loaded: [],
    standby: [],
    failures: {},
    reported: {},
    diskQuotaBytes: 100 * MB,
    memoryBudgetBytes: 100 * MB,
    ...overrides,
  };
}

/** The statuses a previous report step would have recorded, so a test can look past the report. */
function reportedFor(state: DesiredState, current: ActualState): Record<string, ModelStatus> {
  return Object.fromEntries(modelStatuses(state, current, NOW).map((status) => [status.name, status]));
}

function settled(state: DesiredState, overrides: Partial<ActualState>): ActualState {
  const base = actual(overrides);
  return { ...base, reported: reportedFor(state, base) };
}

function kinds(steps: Step[]): string[] {
  return steps.map((step) => (step.kind === 'report' ? 'report' : `${step.kind}:${'model' in step ? step.model.name : step.sha256}`));
}

describe('planSteps', () => {
  it('plans a failed eviction again, after everything the desired models need, unless the file is wanted again', () => {
    const a = model('a');
    const state = desired([a]);
    const files = [file('sha-a', { state: 'partial', bytesOnDisk: MB }), file('sha-gone', { evictFailed: 'EBUSY' })];
    const steps = planSteps(state, settled(state, { files }), NOW);
    expect(kinds(steps)).toEqual(['download:a', 'evict:sha-gone']);
    expect(steps[1]).toMatchObject({ kind: 'evict', sha256: 'sha-gone', bytes: 10 * MB, reason: expect.stringContaining('EBUSY') });
    const wanted = desired([a, model('gone', { sha256: 'sha-gone', load: false })]);
    expect(kinds(planSteps(wanted, settled(wanted, { files }), NOW))).toEqual(['download:a']);
  });

  it('plans the unload of a desired model whose unload failed (it keeps counting against memory) and no second load', () => {
    const a = model('a');
    const state = desired([a]);
    const current = settled(state, { files: [file('sha-a')], loaded: [{ name: 'a', sha256: 'sha-a', memoryBytes: 20 * MB, unloadFailed: true }], standby: [{ name: 'a', sha256: 'sha-a' }] });
    expect(planSteps(state, current, NOW)).toEqual([{ kind: 'unload', name: 'a', sha256: 'sha-a', reason: 'unload-failed' }]);
  });
  it('reports an empty desired state once and then has nothing to do', () => {
    const state = desired([], 3);
    const steps = planSteps(state, actual({ appliedVersion: 2 }), NOW);
    expect(steps).toEqual([{ kind: 'report', version: 3, statuses: [] }]);
    expect(planSteps(state, actual({ appliedVersion: 3 }), NOW)).toEqual([]);
  });

  it('absent -> download from byte 0, reported as pending first', () => {
    const state = desired([model('a')]);
    const steps = planSteps(state, actual(), NOW);
    expect(kinds(steps)).toEqual(['report', 'download:a']);
    expect(steps[0]).toMatchObject({ statuses: [{ name: 'a', phase: 'pending' }] });
    expect(steps[1]).toMatchObject({ kind: 'download', resumeFrom: 0 });
  });

  it('partial -> download resumes from the bytes on disk, progress reported', () => {
    const state = desired([model('a')]);
    const current = settled(state, { files: [file('sha-a', { state: 'partial', bytesOnDisk: 4 * MB })] });
    expect(planSteps(state, current, NOW)).toEqual([{ kind: 'download', model: model('a'), resumeFrom: 4 * MB }]);
    expect(modelStatuses(state, current, NOW)[0]).toMatchObject({ phase: 'downloading', receivedBytes: 4 * MB, totalBytes: 10 * MB });
  });

  it('complete -> verify', () => {
    const state = desired([model('a')]);
    const current = settled(state, { files: [file('sha-a', { state: 'complete' })] });
    expect(kinds(planSteps(state, current, NOW))).toEqual(['verify:a']);
    expect(modelStatuses(state, current, NOW)[0]?.phase).toBe('verifying');
  });

  it('verified -> load with the declared memory, or an estimate from the file size', () => {
    const state = desired([model('a')]);
    const current = settled(state, { files: [file('sha-a')] });
    expect(planSteps(state, current, NOW)).toEqual([{ kind: 'load', model: model('a'), memoryBytes: 20 * MB }]);
    expect(estimateMemory(model('b', { memoryBytes: undefined }), undefined)).toBe(13 * MB);
  });

  it('verified and loaded -> ready and converged', () => {
    const state = desired([model('a')]);
    const current = actual({ files: [file('sha-a')], loaded: [{ name: 'a', sha256: 'sha-a', memoryBytes: 20 * MB }] });
    const steps = planSteps(state, current, NOW);
    expect(steps).toEqual([{ kind: 'report', version: 1, statuses: [{ name: 'a', sha256: 'sha-a', phase: 'ready', loaded: true }] }]);
    expect(planSteps(state, { ...current, reported: reportedFor(state, current) }, NOW)).toEqual([]);
  });

  it('standby (unloaded after idle) counts as ready and is not loaded again by the planner', () => {
    const state = desired([model('a')]);
    const current = settled(state, { files: [file('sha-a')], standby: [{ name: 'a', sha256: 'sha-a' }] });
    expect(planSteps(state, current, NOW)).toEqual([]);
    expect(modelStatuses(state, current, NOW)[0]).toMatchObject({ phase: 'ready', loaded: false });
    // No longer desired: forgotten.
    const gone = desired([], 2);
    expect(planSteps(gone, settled(gone, { appliedVersion: 2, files: [file('sha-a')], standby: [{ name: 'a', sha256: 'sha-a' }] }), NOW)).toEqual([
      { kind: 'unload', name: 'a', sha256: 'sha-a', reason: 'not-desired', standby: true },
    ]);
  });

  it('a model desired on disk only is ready without being loaded', () => {
    const state = desired([model('a', { load: false })]);
    const current = settled(state, { files: [file('sha-a')] });
    expect(planSteps(state, current, NOW)).toEqual([]);
    expect(modelStatuses(state, current, NOW)[0]).toMatchObject({ phase: 'ready', loaded: false });
  });

  it('loaded but no longer desired -> unload, and the report drops the model', () => {
    const previous = desired([model('a')]);
    const state = desired([], 2);
    const current = actual({
      files: [file('sha-a')],
      loaded: [{ name: 'a', sha256: 'sha-a', memoryBytes: 20 * MB }],
      reported: { a: { name: 'a', sha256: 'sha-a', phase: 'ready', loaded: true } },
    });
    expect(reportedFor(previous, current)['a']?.phase).toBe('ready');
    const steps = planSteps(state, current, NOW);
    expect(steps[0]).toEqual({ kind: 'report', version: 2, statuses: [] });
    expect(steps[1]).toEqual({ kind: 'unload', name: 'a', sha256: 'sha-a', reason: 'not-desired' });
    expect(steps).toHaveLength(2);
  });

  it('a new file for a loaded name -> unload the old one (replaced) and fetch the new one', () => {
    const state = desired([model('a', { sha256: 'sha-a2' })], 2);
    const current = settled(state, { files: [file('sha-a')], loaded: [{ name: 'a', sha256: 'sha-a', memoryBytes: 20 * MB }] });
    expect(kinds(planSteps(state, current, NOW))).toEqual(['unload:sha-a', 'download:a']);
    expect(planSteps(state, current, NOW)[0]).toMatchObject({ reason: 'replaced' });
  });

  it('plans a pin step for a stored desired file whose pin differs; undesired files keep theirs', () => {
    const state = desired([model('a', { pinned: true, load: false }), model('b', { load: false })]);
    const current = settled(state, { files: [file('sha-a'), file('sha-b'), file('sha-old', { pinned: true })] });
    expect(planSteps(state, current, NOW)).toEqual([{ kind: 'pin', name: 'a', sha256: 'sha-a', pinned: true }]);
    const unpin = desired([model('a', { load: false })], 2);
    expect(planSteps(unpin, settled(unpin, { files: [file('sha-a', { pinned: true })] }), NOW)).toEqual([{ kind: 'pin', name: 'a', sha256: 'sha-a', pinned: false }]);
  });

  it('disk quota: evicts the least recently used unpinned, unloaded, undesired file first', () => {
    const state = desired([model('new', { sizeBytes: 30 * MB })]);
    const current = settled(state, {
      diskQuotaBytes: 50 * MB,
      files: [
        file('sha-old-pinned', { lastUsedAt: 1, pinned: true }),
        file('sha-lru', { lastUsedAt: 2 }),
        file('sha-mru', { lastUsedAt: 5 }),
        file('sha-loaded', { lastUsedAt: 3 }),
      ],
      loaded: [{ name: 'loaded', sha256: 'sha-loaded', memoryBytes: 1 }],
    });
    // 40 MB used + 30 needed > 50: evict two; the pinned and the loaded file stay.
    const steps = planSteps(state, current, NOW).filter((step) => step.kind !== 'unload');
    expect(kinds(steps)).toEqual(['evict:sha-lru', 'evict:sha-mru', 'download:new']);
  });

  it('a partially downloaded file of another model is evictable too, a desired partial is not', () => {
    const state = desired([model('a', { sizeBytes: 20 * MB })]);
    const current = settled(state, {
      diskQuotaBytes: 25 * MB,
      files: [file('sha-a', { state: 'partial', bytesOnDisk: 5 * MB }), file('sha-x', { state: 'partial', bytesOnDisk: 10 * MB })],
    });
    expect(kinds(planSteps(state, current, NOW))).toEqual(['evict:sha-x', 'download:a']);
  });

  it('disk quota that cannot be met -> fail with the reason, pinned files untouched', () => {
    const state = desired([model('a', { sizeBytes: 30 * MB })]);
    const current = settled(state, { diskQuotaBytes: 35 * MB, files: [file('sha-p', { pinned: true })] });
    const steps = planSteps(state, current, NOW);
    expect(steps).toHaveLength(1);
    expect(steps[0]).toMatchObject({ kind: 'fail', stage: 'download', code: 'DISK_QUOTA_EXCEEDED', reason: expect.stringMatching(/disk quota exceeded/) });
    const tooBig = desired([model('b', { sizeBytes: 40 * MB })]);
    expect(planSteps(tooBig, settled(tooBig, { diskQuotaBytes: 35 * MB }), NOW)[0]).toMatchObject({
      kind: 'fail',
      reason: expect.stringMatching(/quota is/),
    });
  });

  it('memory: more than the whole budget fails, more than what is free waits', () => {
    const huge = desired([model('a', { memoryBytes: 200 * MB })]);
    expect(planSteps(huge, settled(huge, { files: [file('sha-a')] }), NOW)[0]).toMatchObject({
      kind: 'fail',
      stage: 'load',
      code: 'INSUFFICIENT_MEMORY',
      reason: expect.stringMatching(/budget/),
    });
    const state = desired([model('a', { memoryBytes: 60 * MB }), model('b', { memoryBytes: 60 * MB })]);
    const current = settled(state, { files: [file('sha-a'), file('sha-b')] });
    expect(kinds(planSteps(state, current, NOW))).toEqual(['load:a']);
    const afterA = settled(state, { files: [file('sha-a'), file('sha-b')], loaded: [{ name: 'a', sha256: 'sha-a', memoryBytes: 60 * MB }] });
    expect(planSteps(state, afterA, NOW)).toEqual([]);
  });

  it('memory held by a model being unloaded is counted as free', () => {
    const state = desired([model('b', { memoryBytes: 80 * MB })], 2);
    const current = settled(state, { files: [file('sha-b')], loaded: [{ name: 'a', sha256: 'sha-a', memoryBytes: 80 * MB }] });
    expect(kinds(planSteps(state, current, NOW))).toEqual(['unload:sha-a', 'load:b']);
  });

  it('a failure waits for its retry time, then the step is planned again', () => {
    const state = desired([model('a')]);
    const failure = { stage: 'download' as const, code: 'DOWNLOAD_FAILED' as const, reason: 'HTTP 503', attempts: 1, retryAt: NOW + 500, permanent: false };
    const current = settled(state, { failures: { [modelKey(model('a'))]: failure } });
    expect(planSteps(state, current, NOW)).toEqual([]);
    expect(modelStatuses(state, current, NOW)[0]).toMatchObject({ phase: 'pending', code: 'DOWNLOAD_FAILED', reason: 'retrying after: HTTP 503' });
    const later = { ...current, reported: reportedFor(state, { ...current }) };
    expect(kinds(planSteps(state, later, NOW + 501)).filter((kind) => kind !== 'report')).toEqual(['download:a']);
  });

  it('a permanent failure is reported as failed with its reason and not retried', () => {
    const state = desired([model('a')]);
    const failure = { stage: 'verify' as const, code: 'CHECKSUM_MISMATCH' as const, reason: 'sha256 mismatch', attempts: 3, retryAt: 0, permanent: true };
    const current = actual({ files: [], failures: { [modelKey(model('a'))]: failure } });
    expect(planSteps(state, current, NOW)).toEqual([
      { kind: 'report', version: 1, statuses: [{ name: 'a', sha256: 'sha-a', phase: 'failed', code: 'CHECKSUM_MISMATCH', reason: 'sha256 mismatch' }] },
    ]);
    expect(planSteps(state, { ...current, reported: reportedFor(state, current) }, NOW)).toEqual([]);
  });

  it('orders steps: report, unload, fail, evict, verify, load, download', () => {
    const state = desired(
      [model('dl', { sizeBytes: 20 * MB }), model('ld'), model('vf'), model('big', { memoryBytes: 500 * MB })],
      2,
    );
    const current = actual({
      diskQuotaBytes: 55 * MB,
      files: [file('sha-ld'), file('sha-vf', { state: 'complete' }), file('sha-big'), file('sha-gone', { lastUsedAt: 1 })],
      loaded: [{ name: 'gone', sha256: 'sha-gone', memoryBytes: 1 }],
    });
    // sha-gone is still loaded, so it cannot be evicted in this plan: the download waits for the unload.
    expect(kinds(planSteps(state, current, NOW))).toEqual(['report', 'unload:sha-gone', 'fail:big', 'verify:vf', 'load:ld']);
    const unloaded = { ...current, loaded: [] };
    expect(kinds(planSteps(state, unloaded, NOW))).toEqual(['report', 'fail:big', 'evict:sha-gone', 'verify:vf', 'load:ld', 'download:dl']);
  });
});

describe('executor helpers', () => {
  it('backs off exponentially with jitter and gives up after maxAttempts', () => {
    const policy = { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 3000 };
    const first = nextFailure(undefined, 'download', 'DOWNLOAD_FAILED', 'HTTP 500', NOW, policy, 1);
    expect(first).toEqual({ stage: 'download', code: 'DOWNLOAD_FAILED', reason: 'HTTP 500', attempts: 1, retryAt: NOW + 1000, permanent: false });
    const second = nextFailure(first, 'download', 'DOWNLOAD_FAILED', 'HTTP 500', NOW, policy, 0);
    expect(second.retryAt).toBe(NOW + 1000);
    const third = nextFailure(second, 'download', 'DOWNLOAD_FAILED', 'HTTP 500', NOW, policy, 1);
    expect(third).toMatchObject({ attempts: 3, retryAt: NOW + 3000, permanent: true, reason: 'HTTP 500 (gave up after 3 attempts)' });
  });

  it('ignores desired states that are not newer than the applied one', () => {
    expect(isNewerDesired(4, 5)).toBe(true);
    expect(isNewerDesired(5, 5)).toBe(false);
    expect(isNewerDesired(5, 4)).toBe(false);
  });

  it('dispatches every step kind to its handler', async () => {
    const seen: string[] = [];
    const record = async (step: Step): Promise<void> => {
      seen.push(step.kind);
    };
    const handlers: StepHandlers = { download: record, verify: record, load: record, unload: record, evict: record, pin: record, report: record, fail: record };
    const steps: Step[] = [
      { kind: 'download', model: model('a'), resumeFrom: 0 },
      { kind: 'verify', model: model('a') },
      { kind: 'load', model: model('a'), memoryBytes: 1 },
      { kind: 'unload', name: 'a', sha256: 'x', reason: 'not-desired' },
      { kind: 'evict', sha256: 'x', bytes: 1, reason: 'r' },
      { kind: 'pin', name: 'a', sha256: 'x', pinned: true },
      { kind: 'report', version: 1, statuses: [] },
      { kind: 'fail', model: model('a'), stage: 'load', code: 'INSUFFICIENT_MEMORY', reason: 'r' },
    ];
    for (const step of steps) await runStep(step, handlers, new AbortController().signal);
    expect(seen).toEqual(['download', 'verify', 'load', 'unload', 'evict', 'pin', 'report', 'fail']);
    expect(steps.map(stageOf)).toEqual(['download', 'verify', 'load', undefined, undefined, undefined, undefined, undefined]);
  });
});
