import { join } from 'node:path';
import { DevicePageSchema, DeviceTelemetrySchema, type DeviceListItem } from '@flotilla/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlaneProcess } from '../src/sim/control-plane.js';
import { startSimFleet, summaryLine, type SimFleet } from '../src/sim/sim-fleet.js';
import { makeTempDir } from './support/temp-dir.js';
import { waitFor } from './support/wait.js';

// 200 simulated devices against the BUILT control plane (PGlite), as a process: join, online via REST, telemetry
// stored and acked, crash -> offline, silence -> offline. Keepalive 2 s and telemetry every second keep it short.
const DEVICES = 200;
const KEEPALIVE_S = 5;

let dir: string;
let cleanup: () => Promise<void>;
let cp: ControlPlaneProcess;
let fleet: SimFleet | undefined;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('sim-fleet'));
  cp = await ControlPlaneProcess.start({ dataDir: join(dir, 'cp') });
}, 90_000);

afterAll(async () => {
  await fleet?.stop({ graceful: false });
  await cp?.stop();
  await cleanup();
}, 60_000);

async function listDevices(): Promise<DeviceListItem[]> {
  const items: DeviceListItem[] = [];
  let cursor: string | null = null;
  do {
    const page = DevicePageSchema.parse(await cp.api(`/api/v1/devices?limit=500${cursor ? `&cursor=${cursor}` : ''}`));
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

async function statusOf(ids: readonly string[]): Promise<Map<string, string>> {
  const all = await listDevices();
  const wanted = new Set(ids);
  return new Map(all.filter((d) => wanted.has(d.id)).map((d) => [d.id, d.status]));
}

describe('simulated fleet against the built control plane', () => {
  it(`joins ${DEVICES} devices: all online, telemetry stored and acked, crash and silence seen offline`, async () => {
    fleet = await startSimFleet({
      controlPlaneUrl: cp.url,
      adminToken: cp.adminToken,
      credentialsFile: join(dir, 'credentials.json'),
      devicesPerAddress: 20,
      behaviour: { keepaliveSeconds: KEEPALIVE_S, telemetryIntervalMs: 1000, connectTimeoutMs: 60_000 },
    });
    const joinStarted = Date.now();
    await fleet.join(DEVICES);
    const joined = await fleet.waitFor((s) => s.online === DEVICES, `${DEVICES} devices online`, 90_000);
    console.log(`[sim-fleet] ${DEVICES} enrolled and online in ${Date.now() - joinStarted} ms: ${summaryLine(joined)}`);
    expect(joined.counters.failedConnects).toBe(0);
    // Spread over 127.1.0.1..127.1.0.10, 20 devices each: the source addresses the control plane sees.
    expect(new Set(fleet.devices.map((d) => d.client.localAddress)).size).toBe(DEVICES / 20);

    const devices = await listDevices();
    const ours = new Set(fleet.devices.map((d) => d.deviceId));
    expect(devices.filter((d) => ours.has(d.id) && d.status === 'online')).toHaveLength(DEVICES);

    // Telemetry: every device's entries acked, and what a device had acked is stored, once.
    await fleet.waitFor(() => fleet!.devices.every((d) => d.acknowledgedSeq >= 2), 'two acked entries per device', 60_000);
    for (const device of fleet.devices.slice(0, 5)) {
      const acked = device.acknowledgedSeq;
      const telemetry = DeviceTelemetrySchema.parse(await cp.api(`/api/v1/devices/${device.deviceId}/telemetry`));
      const stored = telemetry.items.reduce((sum, point) => sum + point.samples, 0);
      expect(stored).toBeGreaterThanOrEqual(acked);
      expect(stored).toBeLessThanOrEqual(device.highestSeq);
    }

    // crash: sockets destroyed without DISCONNECT -> the will -> offline.
    const crashed = fleet.crash(5).map((d) => d.deviceId);
    const crashAt = Date.now();
    await waitFor(async () => [...(await statusOf(crashed)).values()].every((s) => s === 'offline'), 'crashed devices offline', 15_000, 50);
    const crashMs = Date.now() - crashAt;

    // silence: nothing sent, socket open -> the broker's keepalive (1.5 x) -> offline.
    const silenced = fleet.silence(5).map((d) => d.deviceId);
    const silenceAt = Date.now();
    await waitFor(async () => [...(await statusOf(silenced)).values()].every((s) => s === 'offline'), 'silenced devices offline', 30_000, 50);
    const silenceMs = Date.now() - silenceAt;
    console.log(`[sim-fleet] crash -> offline in ${crashMs} ms, silence -> offline in ${silenceMs} ms (keepalive ${KEEPALIVE_S} s)`);
    // The others stay online.
    const rest = fleet.devices.filter((d) => !crashed.includes(d.deviceId) && !silenced.includes(d.deviceId)).map((d) => d.deviceId);
    expect([...(await statusOf(rest)).values()].filter((s) => s !== 'online')).toEqual([]);
    const final = fleet.stats();
    expect(final.crashed).toBe(5);
    expect(final.counters.malformed).toBe(0);
  }, 180_000);
});
