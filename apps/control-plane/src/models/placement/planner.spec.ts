import { describe, expect, it } from 'vitest';
import {
  planPlacements,
  type PlanInput,
  type PlannerDeployment,
  type PlannerDevice,
  type PlannerModel,
  type PlannerModelState,
  type PlannerPlacement,
} from './planner.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

// Factories: plain data, no mocks (the planner is a pure function).
function device(id: string, over: Partial<PlannerDevice> & { memory?: number; vram?: number; disk?: number } = {}): PlannerDevice {
  const { memory = 8 * GiB, vram = 0, disk = 100 * GiB, ...rest } = over;
  return {
    id,
    status: 'online',
    labels: {},
    hardware: { memoryTotalBytes: memory, acceleratorBytes: vram, diskFreeBytes: disk },
    cachedSha256: [],
    ...rest,
  };
}

function model(id: string, over: Partial<PlannerModel> = {}): PlannerModel {
  return { id, name: `${id}-q4`, sha256: id.padEnd(64, '0').slice(0, 64), sizeBytes: 500 * MiB, memoryBytes: 1 * GiB, contextLength: 4096, ...over };
}

function deployment(id: string, modelId: string, over: Partial<PlannerDeployment> = {}): PlannerDeployment {
  return { id, name: id, modelId, replicas: 1, labelSelector: {}, pinnedDeviceIds: [], accelerator: 'any', contextSize: null, parallel: 1, ...over };
}

function ready(deviceId: string, m: PlannerModel): PlannerModelState {
  return { deviceId, modelName: m.name, sha256: m.sha256, state: 'ready', loaded: true };
}

function plan(input: Partial<PlanInput>) {
  return planPlacements({ deployments: [], models: [], devices: [], placements: [], modelStates: [], ...input });
}

const where = (placements: PlannerPlacement[], modelId?: string) =>
  placements.filter((p) => modelId === undefined || p.modelId === modelId).map((p) => p.deviceId).sort();

describe('planPlacements', () => {
  const small = model('aaa');

  it('places a replica on the only device that fits the memory, keeping headroom', () => {
    const big = model('bbb', { memoryBytes: 6 * GiB });
    // 6.5 GiB total: 6 GiB fits the raw memory but not with 10 % headroom.
    const r = plan({ models: [big], deployments: [deployment('d', 'bbb')], devices: [device('dev-a', { memory: 6.5 * GiB }), device('dev-b', { memory: 16 * GiB })] });
    expect(where(r.placements)).toEqual(['dev-b']);
    expect(r.placements[0]).toMatchObject({ deploymentId: 'd', modelId: 'bbb', loaded: true, parallel: 1 });
    expect(r.deployments[0]).toMatchObject({ wanted: 1, placed: 1, ready: 0 });
  });

  it('counts VRAM and honours a maxMemoryBytes limit', () => {
    const big = model('bbb', { memoryBytes: 10 * GiB });
    const r = plan({
      models: [big],
      deployments: [deployment('d', 'bbb', { replicas: 2 })],
      devices: [device('dev-gpu', { memory: 8 * GiB, vram: 8 * GiB }), device('dev-limited', { memory: 32 * GiB, limits: { maxMemoryBytes: 8 * GiB } })],
    });
    expect(where(r.placements)).toEqual(['dev-gpu']);
    expect(r.deployments[0]?.unsatisfied).toMatchObject({ missing: 1, devices: { memory: 1, 'holds-model': 1 } });
  });

  it('adds up the memory of several models on one device', () => {
    const models = [model('m1', { memoryBytes: 3 * GiB }), model('m2', { memoryBytes: 3 * GiB }), model('m3', { memoryBytes: 3 * GiB })];
    const r = plan({ models, deployments: models.map((m) => deployment(`d-${m.id}`, m.id)), devices: [device('dev-a', { memory: 8 * GiB })] });
    expect(r.placements.map((p) => p.modelId)).toEqual(['m1', 'm2']);
    expect(r.deployments[2]?.unsatisfied?.message).toBe('1 of 1 replica of m3-q4 cannot be placed: 1 device not enough free memory');
  });

  it('needs an accelerator when required and prefers one when preferred', () => {
    // Same total memory everywhere, so only the accelerator rule tells them apart.
    const devices = [device('dev-cpu-1'), device('dev-cpu-2'), device('dev-gpu', { memory: 4 * GiB, vram: 4 * GiB })];
    const required = plan({ models: [small], deployments: [deployment('d', 'aaa', { replicas: 2, accelerator: 'required' })], devices });
    expect(where(required.placements)).toEqual(['dev-gpu']);
    expect(required.deployments[0]?.unsatisfied?.devices).toEqual({ 'no-accelerator': 2, 'holds-model': 1 });
    const preferred = plan({ models: [small], deployments: [deployment('d', 'aaa', { accelerator: 'preferred' })], devices });
    expect(where(preferred.placements)).toEqual(['dev-gpu']);
    const any = plan({ models: [small], deployments: [deployment('d', 'aaa')], devices });
    expect(where(any.placements)).toEqual(['dev-cpu-1']);
  });

  it('needs free disk for a file the device does not hold yet, minus what is already on its way', () => {
    const m = model('bbb', { sizeBytes: 4 * GiB });
    const devices = [device('dev-a', { disk: 4 * GiB }), device('dev-b', { disk: 4 * GiB, cachedSha256: [m.sha256] }), device('dev-c', { disk: 5 * GiB })];
    const r = plan({ models: [m], deployments: [deployment('d', 'bbb', { replicas: 3 })], devices });
    expect(where(r.placements)).toEqual(['dev-b', 'dev-c']);
    expect(r.deployments[0]?.unsatisfied?.devices).toEqual({ disk: 1, 'holds-model': 2 });
    const quota = plan({ models: [m], deployments: [deployment('d', 'bbb')], devices: [device('dev-q', { limits: { diskQuotaBytes: 2 * GiB } })] });
    expect(quota.placements).toEqual([]);
    expect(quota.deployments[0]?.unsatisfied?.devices).toEqual({ disk: 1 });
  });

  it('spreads replicas one per device, least loaded first', () => {
    const other = model('ccc');
    const r = plan({
      models: [small, other],
      deployments: [deployment('a-first', 'ccc'), deployment('b-second', 'aaa', { replicas: 2 })],
      devices: [device('dev-1'), device('dev-2'), device('dev-3')],
    });
    expect(where(r.placements, 'ccc')).toEqual(['dev-1']);
    // dev-1 already holds a model: the two replicas go to the empty devices.
    expect(where(r.placements, 'aaa')).toEqual(['dev-2', 'dev-3']);
  });

  it('prefers devices that already hold the file', () => {
    const r = plan({
      models: [small],
      deployments: [deployment('d', 'aaa', { replicas: 2 })],
      devices: [device('dev-1'), device('dev-2', { cachedSha256: [small.sha256] }), device('dev-3'), device('dev-4', { cachedSha256: [small.sha256] })],
    });
    expect(where(r.placements)).toEqual(['dev-2', 'dev-4']);
  });

  it('honours pins and label selectors', () => {
    const devices = [device('dev-1', { labels: { zone: 'eu' } }), device('dev-2', { labels: { zone: 'us' } }), device('dev-3', { labels: { zone: 'eu', gpu: 'yes' } })];
    const bySelector = plan({ models: [small], deployments: [deployment('d', 'aaa', { replicas: 3, labelSelector: { zone: 'eu' } })], devices });
    expect(where(bySelector.placements)).toEqual(['dev-1', 'dev-3']);
    expect(bySelector.deployments[0]?.unsatisfied?.message).toBe('1 of 3 replicas of aaa-q4 cannot be placed: 2 devices already hold a replica of this model, 1 device labels do not match the selector');
    const pinned = plan({ models: [small], deployments: [deployment('d', 'aaa', { replicas: 2, pinnedDeviceIds: ['dev-2'] })], devices });
    expect(where(pinned.placements)).toEqual(['dev-2']);
    expect(pinned.deployments[0]?.unsatisfied?.devices).toEqual({ 'not-pinned': 2, 'holds-model': 1 });
    const both = plan({ models: [small], deployments: [deployment('d', 'aaa', { pinnedDeviceIds: ['dev-2', 'dev-3'], labelSelector: { gpu: 'yes' } })], devices });
    expect(where(both.placements)).toEqual(['dev-3']);
  });

  it('re-places the replica of a device that went offline, and stays put when it comes back', () => {
    const d = deployment('d', 'aaa');
    const first = plan({ models: [small], deployments: [d], devices: [device('dev-1'), device('dev-2')] });
    expect(where(first.placements)).toEqual(['dev-1']);
    const dead = plan({ models: [small], deployments: [d], devices: [device('dev-1', { status: 'offline' }), device('dev-2')], placements: first.placements });
    expect(where(dead.placements)).toEqual(['dev-2']);
    expect(where(dead.removed)).toEqual(['dev-1']);
    expect(where(dead.added)).toEqual(['dev-2']);
    expect(dead.changedDeviceIds).toEqual(['dev-1', 'dev-2']);
    const back = plan({ models: [small], deployments: [d], devices: [device('dev-1'), device('dev-2')], placements: dead.placements });
    expect(back.changedDeviceIds).toEqual([]);
    expect(where(back.placements)).toEqual(['dev-2']);
    // Draining and revoked devices lose their replicas the same way.
    const draining = plan({ models: [small], deployments: [d], devices: [device('dev-1'), device('dev-2', { status: 'draining' })], placements: dead.placements });
    expect(where(draining.placements)).toEqual(['dev-1']);
  });

  it('keeps the replica of an offline device where no other device can take it, and changes nothing when it comes back', () => {
    const d = deployment('d', 'aaa');
    const first = plan({ models: [small], deployments: [d], devices: [device('dev-1')] });
    expect(where(first.placements)).toEqual(['dev-1']);
    // Cut off: the only device. Its replica stays (no empty desired state waiting for it), placed but not ready.
    const cut = plan({ models: [small], deployments: [d], devices: [device('dev-1', { status: 'offline' })], placements: first.placements, modelStates: [ready('dev-1', small)] });
    expect(cut).toMatchObject({ added: [], removed: [], updated: [], changedDeviceIds: [] });
    expect(where(cut.placements)).toEqual(['dev-1']);
    expect(cut.deployments[0]).toMatchObject({ placed: 1, ready: 0 });
    const back = plan({ models: [small], deployments: [d], devices: [device('dev-1')], placements: cut.placements, modelStates: [ready('dev-1', small)] });
    expect(back).toMatchObject({ added: [], removed: [], updated: [], changedDeviceIds: [] });
    expect(back.deployments[0]).toMatchObject({ placed: 1, ready: 1 });
    // The other devices cannot take it (too small, wrong labels, draining): it stays too.
    const d2 = deployment('d2', 'aaa', { replicas: 2, labelSelector: { site: 'a' } });
    const fleet = [device('dev-1', { labels: { site: 'a' } }), device('dev-2', { labels: { site: 'a' } }), device('dev-3', { labels: { site: 'a' }, memory: 1 * GiB }), device('dev-4')];
    const placed = plan({ models: [small], deployments: [d2], devices: fleet });
    expect(where(placed.placements)).toEqual(['dev-1', 'dev-2']);
    const down = fleet.map((x) => (x.id === 'dev-2' ? { ...x, status: 'offline' as const } : x));
    const held = plan({ models: [small], deployments: [d2], devices: down, placements: placed.placements });
    expect(held.changedDeviceIds).toEqual([]);
    expect(where(held.placements)).toEqual(['dev-1', 'dev-2']);
    // A device that can take it appears: the replica moves (re-placement wins over holding).
    const bigger = [...down, device('dev-5', { labels: { site: 'a' } })];
    const moved = plan({ models: [small], deployments: [d2], devices: bigger, placements: held.placements });
    expect(where(moved.placements)).toEqual(['dev-1', 'dev-5']);
    expect(where(moved.removed)).toEqual(['dev-2']);
  });

  it('does not hold an offline replica the device is no longer eligible for', () => {
    const d = deployment('d', 'aaa', { labelSelector: { site: 'a' } });
    const first = plan({ models: [small], deployments: [d], devices: [device('dev-1', { labels: { site: 'a' } })] });
    const relabelled = plan({ models: [small], deployments: [d], devices: [device('dev-1', { status: 'offline', labels: { site: 'b' } })], placements: first.placements });
    expect(relabelled.placements).toEqual([]);
    const avoided = plan({
      models: [small],
      deployments: [d],
      devices: [device('dev-1', { status: 'offline', labels: { site: 'a' } })],
      placements: first.placements,
      avoid: [{ deviceId: 'dev-1', modelId: 'aaa' }],
    });
    expect(avoided.placements).toEqual([]);
    expect(avoided.deployments[0]?.unsatisfied?.missing).toBe(1);
  });

  it('keeps the replicas of a reconnecting device but counts them not ready and places nothing new there', () => {
    const d = deployment('d', 'aaa', { replicas: 2 });
    const first = plan({ models: [small], deployments: [d], devices: [device('dev-1'), device('dev-2')] });
    const states = [ready('dev-1', small), ready('dev-2', small)];
    expect(plan({ models: [small], deployments: [d], devices: [device('dev-1'), device('dev-2')], placements: first.placements, modelStates: states }).deployments[0])
      .toMatchObject({ placed: 2, ready: 2 });
    // After a control-plane restart dev-1 has not come back: its last report is an earlier process's knowledge.
    const restarted = plan({
      models: [small],
      deployments: [d],
      devices: [device('dev-1', { status: 'reconnecting' }), device('dev-2')],
      placements: first.placements,
      modelStates: states,
    });
    expect(restarted).toMatchObject({ added: [], removed: [], changedDeviceIds: [] });
    expect(restarted.deployments[0]).toMatchObject({ placed: 2, ready: 1 });
    // A new deployment does not go to it.
    const more = plan({ models: [small], deployments: [deployment('e', 'aaa', { replicas: 2 })], devices: [device('dev-1', { status: 'reconnecting' }), device('dev-2')] });
    expect(where(more.placements)).toEqual(['dev-2']);
    expect(more.deployments[0]?.unsatisfied?.devices).toEqual({ reconnecting: 1, 'holds-model': 1 });
  });

  it('is stable: the same input changes nothing and a new device does not attract existing replicas', () => {
    const input = { models: [small], deployments: [deployment('d', 'aaa', { replicas: 2 })], devices: [device('dev-2'), device('dev-3')] };
    const first = plan(input);
    expect(plan({ ...input, placements: first.placements })).toMatchObject({ added: [], removed: [], updated: [], changedDeviceIds: [] });
    // dev-1 sorts first and is empty, but the replicas stay where they are.
    const joined = plan({ ...input, devices: [device('dev-1'), ...input.devices], placements: first.placements });
    expect(joined.changedDeviceIds).toEqual([]);
    // A device that joins later takes the replica that could not be placed before.
    const short = plan({ ...input, devices: [device('dev-2')] });
    expect(short.deployments[0]?.unsatisfied?.missing).toBe(1);
    const grown = plan({ ...input, devices: [device('dev-1'), device('dev-2')], placements: short.placements });
    expect(where(grown.added)).toEqual(['dev-1']);
    expect(grown.removed).toEqual([]);
  });

  it('updates settings in place and scales down keeping ready replicas', () => {
    const d = deployment('d', 'aaa', { replicas: 3 });
    const devices = [device('dev-1'), device('dev-2'), device('dev-3')];
    const first = plan({ models: [small], deployments: [d], devices });
    const tuned = plan({ models: [small], deployments: [{ ...d, contextSize: 2048, parallel: 4 }], devices, placements: first.placements });
    expect(tuned.updated).toHaveLength(3);
    expect(tuned.updated[0]).toMatchObject({ contextSize: 2048, parallel: 4 });
    const down = plan({ models: [small], deployments: [{ ...d, replicas: 1 }], devices, placements: first.placements, modelStates: [ready('dev-3', small)] });
    expect(where(down.placements)).toEqual(['dev-3']);
    expect(where(down.removed)).toEqual(['dev-1', 'dev-2']);
  });

  it('keeps hand-placed models and counts their memory; drops rows of deleted deployments', () => {
    const hog = model('hog', { memoryBytes: 6 * GiB });
    const placements: PlannerPlacement[] = [
      { deviceId: 'dev-1', modelId: 'hog', deploymentId: null, loaded: true, pinned: true, contextSize: null, parallel: 1 },
      { deviceId: 'dev-2', modelId: 'hog', deploymentId: 'gone', loaded: true, pinned: false, contextSize: null, parallel: 1 },
    ];
    const r = plan({ models: [small, hog], deployments: [deployment('d', 'aaa')], devices: [device('dev-1'), device('dev-2')], placements });
    expect(r.placements.map((p) => `${p.deviceId}:${p.modelId}`)).toEqual(['dev-1:hog', 'dev-2:aaa']);
    expect(r.removed.map((p) => `${p.deviceId}:${p.modelId}`)).toEqual(['dev-2:hog']);
  });

  it('avoids a device that recently failed to load the model', () => {
    const r = plan({ models: [small], deployments: [deployment('d', 'aaa')], devices: [device('dev-1'), device('dev-2')], avoid: [{ deviceId: 'dev-1', modelId: 'aaa' }] });
    expect(where(r.placements)).toEqual(['dev-2']);
  });

  it('reports what it cannot place: no devices, no hardware, unknown model', () => {
    const none = plan({ models: [small], deployments: [deployment('d', 'aaa')] });
    expect(none.deployments[0]?.unsatisfied?.message).toBe('1 of 1 replica of aaa-q4 cannot be placed: no devices are enrolled');
    const silent = plan({ models: [small], deployments: [deployment('d', 'aaa')], devices: [device('dev-1', { hardware: undefined })] });
    expect(silent.deployments[0]?.unsatisfied?.devices).toEqual({ 'no-hardware': 1 });
    const unknown = plan({ models: [], deployments: [deployment('d', 'zzz')], devices: [device('dev-1')] });
    expect(unknown.deployments[0]?.unsatisfied?.message).toBe('model zzz is not in the catalog');
  });

  describe('rollout', () => {
    const next = model('nnn');
    const devices = [device('dev-1'), device('dev-2'), device('dev-3'), device('dev-4')];
    const old: PlannerPlacement[] = ['dev-1', 'dev-2'].map((deviceId) => ({
      deviceId,
      modelId: 'aaa',
      deploymentId: 'd',
      loaded: true,
      pinned: false,
      contextSize: null,
      parallel: 1,
    }));
    const d = deployment('d', 'nnn', { replicas: 2 });

    it('adds the new model first and removes the old replicas only as new ones become ready', () => {
      const start = plan({ models: [small, next], deployments: [d], devices, placements: old, modelStates: [ready('dev-1', small), ready('dev-2', small)] });
      expect(where(start.placements, 'aaa')).toEqual(['dev-1', 'dev-2']);
      expect(where(start.placements, 'nnn')).toEqual(['dev-3', 'dev-4']);
      expect(start.removed).toEqual([]);
      expect(start.deployments[0]).toMatchObject({ placed: 2, ready: 0, previous: 2, rollingOut: true });

      const oneReady = plan({
        models: [small, next],
        deployments: [d],
        devices,
        placements: start.placements,
        modelStates: [ready('dev-1', small), ready('dev-2', small), ready('dev-3', next)],
      });
      expect(where(oneReady.placements, 'aaa')).toEqual(['dev-1']);
      expect(where(oneReady.removed)).toEqual(['dev-2']);

      const allReady = plan({
        models: [small, next],
        deployments: [d],
        devices,
        placements: oneReady.placements,
        modelStates: [ready('dev-1', small), ready('dev-3', next), ready('dev-4', next)],
      });
      expect(where(allReady.placements, 'aaa')).toEqual([]);
      expect(allReady.deployments[0]).toMatchObject({ placed: 2, ready: 2, previous: 0, rollingOut: false });
    });

    it('does not count a ready state of another file (sha256) or an unloaded model as ready', () => {
      const states: PlannerModelState[] = [
        { deviceId: 'dev-3', modelName: next.name, sha256: 'f'.repeat(64), state: 'ready', loaded: true },
        { deviceId: 'dev-4', modelName: next.name, sha256: next.sha256, state: 'ready', loaded: false },
      ];
      const start = plan({ models: [small, next], deployments: [d], devices, placements: old });
      const r = plan({ models: [small, next], deployments: [d], devices, placements: start.placements, modelStates: states });
      expect(where(r.placements, 'aaa')).toEqual(['dev-1', 'dev-2']);
    });

    it('drops old replicas of offline devices at once', () => {
      const r = plan({ models: [small, next], deployments: [d], devices: [device('dev-1', { status: 'offline' }), ...devices.slice(1)], placements: old });
      expect(where(r.placements, 'aaa')).toEqual(['dev-2']);
    });

    it('swaps one replica at a time in place when there is no room for a new one', () => {
      const full = [device('dev-1', { memory: 2 * GiB }), device('dev-2', { memory: 2 * GiB })];
      const step1 = plan({ models: [small, next], deployments: [d], devices: full, placements: old, modelStates: [ready('dev-1', small), ready('dev-2', small)] });
      expect(step1.placements.map((p) => `${p.deviceId}:${p.modelId}`)).toEqual(['dev-1:aaa', 'dev-2:nnn']);
      expect(step1.deployments[0]?.unsatisfied?.missing).toBe(1);
      // Nothing more while the new replica is on its way.
      const waiting = plan({ models: [small, next], deployments: [d], devices: full, placements: step1.placements, modelStates: [ready('dev-1', small)] });
      expect(waiting.changedDeviceIds).toEqual([]);
      const step2 = plan({ models: [small, next], deployments: [d], devices: full, placements: step1.placements, modelStates: [ready('dev-1', small), ready('dev-2', next)] });
      expect(step2.placements.map((p) => `${p.deviceId}:${p.modelId}`)).toEqual(['dev-1:nnn', 'dev-2:nnn']);
    });
  });
  it('places many replicas in one run exactly where adding them one run at a time would', () => {
    // A mixed fleet: some devices hold a file, some have a GPU, memory differs; three deployments share it.
    const models = [model('aaa'), model('bbb', { memoryBytes: 2 * GiB }), model('ccc', { memoryBytes: 3 * GiB })];
    const devices = Array.from({ length: 40 }, (_, i) =>
      device(`dev-${String(i).padStart(2, '0')}`, {
        memory: (4 + (i % 5) * 2) * GiB,
        vram: i % 7 === 0 ? 8 * GiB : 0,
        cachedSha256: i % 6 === 0 ? [models[1]?.sha256 ?? ''] : [],
      }),
    );
    const wanted = { a: 9, b: 12, c: 7 };
    const deployments = (replicas: { a: number; b: number; c: number }) => [
      deployment('a', 'aaa', { replicas: replicas.a }),
      deployment('b', 'bbb', { replicas: replicas.b, accelerator: 'preferred' }),
      deployment('c', 'ccc', { replicas: replicas.c }),
    ];
    const atOnce = plan({ models, devices, deployments: deployments(wanted) });
    // One more replica per run, deployments in the order a run fills them (by name).
    let placements: PlannerPlacement[] = [];
    const step = { a: 0, b: 0, c: 0 };
    for (const k of ['a', 'b', 'c'] as const) {
      while (step[k] < wanted[k]) {
        step[k] += 1;
        placements = plan({ models, devices, deployments: deployments(step), placements }).placements;
      }
    }
    expect(atOnce.placements.length).toBe(28);
    for (const id of ['aaa', 'bbb', 'ccc']) expect(where(atOnce.placements, id)).toEqual(where(placements, id));
  });
});
