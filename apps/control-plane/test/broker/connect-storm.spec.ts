import { randomUUID } from 'node:crypto';
import { connect as connectTcp, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { generateSecret, hashSecret } from '../../src/identity/auth/secrets.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';

// Issue 11, cause 6: every CONNECT looked its credential up in the database, with nothing bounding how many were
// handled at once. A fleet coming back at once must be admitted, every device, with no refused or timed-out connect.
const DEVICES = 3000;
/** A few dozen per source address, as the simulated fleet spreads itself over 127.0.0.0/8. */
const PER_ADDRESS = 40;
/** Generous: the point is that nothing fails, not how fast (the box is shared and noisy). */
const DEADLINE_MS = 45_000;
/** What a device (mqtt.js in the agent) waits for its CONNACK before it gives up on the attempt. */
const CLIENT_CONNECT_TIMEOUT_MS = 10_000;

interface Seeded {
  deviceId: string;
  password: string;
}

type Outcome = { kind: 'connack'; returnCode: number; ms: number } | { kind: 'closed' | 'error' | 'timeout'; detail: string; ms: number };

/** One raw MQTT client (mqtt-packet over a socket from `localAddress`): resolves with what became of its CONNECT. */
function connectOnce(port: number, localAddress: string, device: Seeded, sockets: Socket[]): Promise<Outcome> {
  const startedAt = Date.now();
  return new Promise((resolve) => {
    const socket = connectTcp({ port, host: '127.0.0.1', localAddress, noDelay: true });
    sockets.push(socket);
    let settled = false;
    const settle = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => settle({ kind: 'timeout', detail: `no CONNACK in ${CLIENT_CONNECT_TIMEOUT_MS} ms`, ms: Date.now() - startedAt }), CLIENT_CONNECT_TIMEOUT_MS);
    const parser = mqttPacket.parser();
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connack') settle({ kind: 'connack', returnCode: packet.returnCode ?? -1, ms: Date.now() - startedAt });
    });
    socket.on('data', (data: Buffer) => parser.parse(data));
    socket.on('error', (error: Error) => settle({ kind: 'error', detail: error.message, ms: Date.now() - startedAt }));
    socket.on('close', () => settle({ kind: 'closed', detail: 'closed before CONNACK', ms: Date.now() - startedAt }));
    socket.once('connect', () => {
      socket.write(
        mqttPacket.generate({
          cmd: 'connect',
          protocolId: 'MQTT',
          protocolVersion: 4,
          clean: false,
          clientId: device.deviceId,
          username: device.deviceId,
          password: Buffer.from(device.password),
          keepalive: 60,
        }),
      );
    });
  });
}

function summarize(outcomes: Outcome[]): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    const key = o.kind === 'connack' ? `connack ${o.returnCode}` : `${o.kind}: ${o.detail}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const times = outcomes.map((o) => o.ms).sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? 0;
  return `${[...counts].map(([k, n]) => `${n} x ${k}`).join('; ')}; time to outcome p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`;
}

describeBackends('a CONNECT storm', (backend) => {
  let t: TestControlPlane;
  const devices: Seeded[] = [];
  const sockets: Socket[] = [];

  beforeAll(async () => {
    t = await startTestControlPlane(backend);
    // Seeded straight into the database (enrollment at scale has its own test): the same rows enrollment writes.
    for (let i = 0; i < DEVICES; i++) devices.push({ deviceId: randomUUID(), password: generateSecret('device') });
    const prisma = t.cp.database.prisma;
    await prisma.device.createMany({ data: devices.map((d, i) => ({ id: d.deviceId, name: `storm-${i}` })) });
    await prisma.deviceCredential.createMany({ data: devices.map((d) => ({ deviceId: d.deviceId, mqttUsername: d.deviceId, secretHash: hashSecret(d.password) })) });
  }, 120_000);

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await t?.dispose();
  });

  it(`admits ${DEVICES} devices connecting at once (${PER_ADDRESS} per source address) with no refused or timed-out connect`, { timeout: DEADLINE_MS + 30_000 }, async () => {
    const startedAt = Date.now();
    const outcomes = await Promise.all(
      devices.map((device, i) => {
        const group = Math.floor(i / PER_ADDRESS);
        return connectOnce(t.cp.mqttPort, `127.20.${Math.floor(group / 250)}.${(group % 250) + 1}`, device, sockets);
      }),
    );
    const elapsed = Date.now() - startedAt;
    const summary = `${summarize(outcomes)}; all settled in ${elapsed} ms`;
    console.info(`[${backend}] CONNECT storm of ${DEVICES}: ${summary}`);
    expect(outcomes.filter((o) => o.kind !== 'connack' || o.returnCode !== 0).length, summary).toBe(0);
    expect(elapsed, summary).toBeLessThan(DEADLINE_MS);
    expect(t.cp.broker.connectedClients, summary).toBe(DEVICES);
  });
});
