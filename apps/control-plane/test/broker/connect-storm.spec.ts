import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateSecret, hashSecret } from '../../src/identity/auth/secrets.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';
import { failedConnects, rawConnect, summarizeOutcomes } from './mqtt-clients.js';

// Issue 11, cause 6: every CONNECT looked its credential up in the database, with nothing bounding how many were
// handled at once. A fleet coming back at once must be admitted, every device, with no refused or timed-out connect
// (a timeout: no CONNACK within the 10 s a device waits before it gives up and retries, as the agent's mqtt.js does).
// The clients run in this process, beside the control plane: the box's whole cost of a storm is on one thread.
const DEVICES = 2000;
/** A few dozen per source address, as the simulated fleet spreads itself over 127.0.0.0/8. */
const PER_ADDRESS = 40;
/** A site whose devices all reach the control plane through one NAT address. */
const SITE = 300;
/** Generous: the point is that nothing fails, not how fast (the box is shared and noisy). */
const DEADLINE_MS = 45_000;

interface Seeded {
  deviceId: string;
  password: string;
}

function makeDevices(n: number): Seeded[] {
  return Array.from({ length: n }, () => ({ deviceId: randomUUID(), password: generateSecret('device') }));
}

describeBackends('a CONNECT storm', (backend) => {
  let t: TestControlPlane;
  const fleet = makeDevices(DEVICES);
  const site = makeDevices(SITE);
  const sockets: Socket[] = [];

  beforeAll(async () => {
    // Default settings: the periodic whole-fleet jobs (planning, alert evaluation) run as in production. They once held
    // PGlite's thread for seconds at this size (a full planning run every 5 s, one alert INSERT per offline device);
    // planning is incremental now, alerts are written in chunks and a device never seen gets a first-connect grace.
    t = await startTestControlPlane(backend);
    // Seeded straight into the database (enrollment at scale has its own test): the same rows enrollment writes. Then
    // the control plane restarts, as in the storm a restart causes: every device is known and reconnects at once. (A
    // device enrolled after start takes the cache's miss path: test/broker/credential-cache.spec.ts.)
    const all = [...fleet, ...site];
    const prisma = t.cp.database.prisma;
    await prisma.device.createMany({ data: all.map((d, i) => ({ id: d.deviceId, name: `storm-${i}` })) });
    await prisma.deviceCredential.createMany({ data: all.map((d) => ({ deviceId: d.deviceId, mqttUsername: d.deviceId, secretHash: hashSecret(d.password) })) });
    await t.restart();
  }, 120_000);

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await t?.dispose();
  });

  it(`admits ${DEVICES} devices connecting at once (${PER_ADDRESS} per source address) with no refused or timed-out connect`, { timeout: DEADLINE_MS + 30_000 }, async () => {
    const startedAt = Date.now();
    const outcomes = await Promise.all(
      fleet.map((device, i) => {
        const group = Math.floor(i / PER_ADDRESS);
        const localAddress = `127.20.${Math.floor(group / 250)}.${(group % 250) + 1}`;
        return rawConnect({ port: t.cp.mqttPort, localAddress, clientId: device.deviceId, password: device.password }, sockets);
      }),
    );
    const elapsed = Date.now() - startedAt;
    const summary = `${summarizeOutcomes(outcomes)}; all settled in ${elapsed} ms`;
    console.info(`[${backend}] CONNECT storm of ${DEVICES}: ${summary}`);
    expect(failedConnects(outcomes), summary).toBe(0);
    expect(elapsed, summary).toBeLessThan(DEADLINE_MS);
    expect(t.cp.broker.connectedClients, summary).toBe(DEVICES);
  });

  it(`admits a site of ${SITE} devices behind one address connecting at once (the per-address cap is 64)`, { timeout: DEADLINE_MS + 30_000 }, async () => {
    const before = t.cp.broker.connectedClients;
    const outcomes = await Promise.all(
      site.map((device) => rawConnect({ port: t.cp.mqttPort, localAddress: '127.21.0.1', clientId: device.deviceId, password: device.password }, sockets)),
    );
    const summary = summarizeOutcomes(outcomes);
    console.info(`[${backend}] ${SITE} devices behind one address: ${summary}`);
    expect(failedConnects(outcomes), summary).toBe(0);
    expect(t.cp.broker.connectedClients - before, summary).toBe(SITE);
  });
});
