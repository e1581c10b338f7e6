import { connect as connectTcp, type Socket } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, createWebSocketStream } from 'ws';
import { api, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { pollUntil } from '../support/poll.js';

// Issue 8 point 3: a PUBLISH header claiming 200 MiB used to be buffered in full by aedes, before CONNECT and after.
const MiB = 1024 * 1024;
const CLAIMED = 200 * MiB;
/** How far an attacking socket streams when nobody stops it: enough that 20 of them, buffered, show in RSS. */
const STREAM_LIMIT = 8 * MiB;
const CHUNK = Buffer.alloc(16 * 1024, 0x61);

/** A PUBLISH fixed header (QoS 0) whose remaining length claims `bytes`. */
function publishHeader(bytes: number): Buffer {
  const length: number[] = [];
  let rest = bytes;
  do {
    let digit = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest > 0) digit |= 0x80;
    length.push(digit);
  } while (rest > 0);
  return Buffer.from([0x30, ...length]);
}

function openSocket(port: number, localAddress = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connectTcp({ port, host: '127.0.0.1', localAddress, noDelay: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

const closedPromise = (socket: Socket) =>
  socket.destroyed ? Promise.resolve() : new Promise<void>((resolve) => socket.once('close', () => resolve()));

/**
 * Writes `header`, then 64 KiB chunks until the peer closes the socket or STREAM_LIMIT is reached; returns the bytes the
 * socket accepted before it closed and whether it did. Between chunks it yields to the event loop (the control plane
 * runs in this process: a loop resumed only by 'drain', which comes on nextTick, would fill the kernel's ~4 MB of
 * loopback buffers before the server read a byte).
 */
async function stream(socket: Socket, header: Buffer): Promise<{ written: number; closed: boolean }> {
  let written = 0;
  let closed = socket.destroyed;
  socket.on('error', () => undefined);
  const onClose = closedPromise(socket).then(() => {
    closed = true;
  });
  socket.write(header);
  written += header.length;
  while (!closed && written < STREAM_LIMIT) {
    const drained = socket.write(CHUNK);
    written += CHUNK.length;
    if (!drained) await Promise.race([new Promise((r) => socket.once('drain', r)), onClose]);
    await new Promise((r) => setImmediate(r));
  }
  // A cut socket is seen closed within a moment; an uncut one is still open after it.
  await Promise.race([onClose, new Promise((r) => setTimeout(r, 1000))]);
  return { written, closed };
}

/** A raw MQTT CONNECT; resolves with the CONNACK return code. */
function connectPacket(socket: Socket, clientId: string, username: string, password: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const parser = mqttPacket.parser();
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connack') resolve(packet.returnCode ?? -1);
    });
    socket.on('data', (data: Buffer) => parser.parse(data));
    socket.once('close', () => reject(new Error('closed before CONNACK')));
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, username, password: Buffer.from(password), keepalive: 30 }));
  });
}

interface Enrolled {
  deviceId: string;
  mqtt: { username: string; password: string };
}

describe('MQTT port under hostile load', () => {
  let t: TestControlPlane;
  let device: Enrolled;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    t = await startTestControlPlane('pglite', { FLOTILLA_MQTT_MAX_UNAUTHENTICATED_PER_ADDRESS: '4' });
    const creds = JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as { adminEmail: string; adminPassword: string };
    const session = (await api<{ token: string }>(t.cp, '/api/v1/auth/login', { body: { email: creds.adminEmail, password: creds.adminPassword } })).body.token;
    const enrollment = (await api<{ token: string }>(t.cp, '/api/v1/enrollment-tokens', { token: session, body: { uses: 1 } })).body.token;
    device = (await api<Enrolled>(t.cp, '/api/v1/enroll', { body: { token: enrollment, name: 'flood' } })).body;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await t?.dispose();
  });

  it('closes 20 sockets that claim a 200 MiB PUBLISH before CONNECT before 2 MiB each, with RSS growing under 50 MB', { timeout: 60_000 }, async () => {
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 10);
    try {
      // 5 source addresses x 4 sockets: within the per-address cap of 4, so each one reaches the packet check.
      const attackers = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const socket = await openSocket(t.cp.mqttPort, `127.0.1.${(i % 5) + 1}`);
          sockets.push(socket);
          return stream(socket, publishHeader(CLAIMED));
        }),
      );
      peak = Math.max(peak, process.memoryUsage().rss);
      const written = attackers.map((a) => a.written);
      const growthMb = (peak - baseline) / 1e6;
      const figures = `bytes each socket wrote: ${written.join(',')}; closed: ${attackers.filter((a) => a.closed).length}/20; RSS grew ${growthMb.toFixed(1)} MB`;
      expect(Math.max(...written), figures).toBeLessThan(2 * MiB);
      expect(attackers.every((a) => a.closed), figures).toBe(true);
      expect(growthMb, figures).toBeLessThan(50);
    } finally {
      clearInterval(sampler);
    }
    expect((await api(t.cp, '/healthz')).status).toBe(200);
  });

  it('cuts off an authenticated device whose PUBLISH header claims 200 MiB before buffering it', { timeout: 30_000 }, async () => {
    const socket = await openSocket(t.cp.mqttPort);
    sockets.push(socket);
    expect(await connectPacket(socket, device.deviceId, device.mqtt.username, device.mqtt.password)).toBe(0);
    const result = await stream(socket, publishHeader(CLAIMED));
    expect(result.written, `bytes written before the cut: ${result.written}`).toBeLessThan(2 * MiB);
    expect(result.closed).toBe(true);
    // The device itself is not banned: it reconnects and is served.
    const again = await openSocket(t.cp.mqttPort);
    sockets.push(again);
    expect(await connectPacket(again, device.deviceId, device.mqtt.username, device.mqtt.password)).toBe(0);
    again.destroy();
  });

  it('cuts a CONNECT larger than the pre-authentication bound and an MQTT-over-WebSocket claim of 200 MiB', { timeout: 30_000 }, async () => {
    const socket = await openSocket(t.cp.mqttPort);
    sockets.push(socket);
    const bigConnect = Buffer.from([0x10, ...publishHeader(CLAIMED).subarray(1)]);
    const connectResult = await stream(socket, bigConnect);
    expect(connectResult.written).toBeLessThan(2 * MiB);
    expect(connectResult.closed).toBe(true);

    const ws = new WebSocket(`ws://127.0.0.1:${t.cp.httpPort}/mqtt`, 'mqtt');
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const duplex = createWebSocketStream(ws);
    duplex.on('error', () => undefined);
    let sent = 0;
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    let isClosed = false;
    closed.then(
      () => (isClosed = true),
      () => undefined,
    );
    ws.send(publishHeader(CLAIMED));
    while (!isClosed && sent < STREAM_LIMIT) {
      ws.send(CHUNK);
      sent += CHUNK.length;
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.race([closed, new Promise((r) => setTimeout(r, 1000))]);
    expect(sent).toBeLessThan(2 * MiB);
    expect(isClosed).toBe(true);
  });

  it('refuses a 5th unauthenticated connection from one address at once, while another address connects', { timeout: 30_000 }, async () => {
    const address = '127.0.2.1';
    const pending = await Promise.all(Array.from({ length: 4 }, () => openSocket(t.cp.mqttPort, address)));
    sockets.push(...pending);
    for (const s of pending) s.on('error', () => undefined);
    // The 5th from the same address is closed well before aedes' 10 s connect timeout would close it.
    const fifth = await openSocket(t.cp.mqttPort, address);
    sockets.push(fifth);
    fifth.on('error', () => undefined);
    const startedAt = Date.now();
    await pollUntil(() => fifth.destroyed || fifth.readableEnded, { timeoutMs: 3000, what: 'the 5th connection closed' });
    expect(Date.now() - startedAt).toBeLessThan(3000);
    expect(pending.every((s) => !s.destroyed)).toBe(true);

    // Another address is not affected: it connects and authenticates.
    const other = await openSocket(t.cp.mqttPort, '127.0.2.2');
    sockets.push(other);
    expect(await connectPacket(other, device.deviceId, device.mqtt.username, device.mqtt.password)).toBe(0);

    // A pending connection that authenticates frees its slot: the next one from that address is admitted.
    expect(await connectPacket(pending[0] as Socket, device.deviceId, device.mqtt.username, device.mqtt.password)).toBe(0);
    const next = await openSocket(t.cp.mqttPort, address);
    sockets.push(next);
    expect(await connectPacket(next, device.deviceId, device.mqtt.username, device.mqtt.password)).toBe(0);
  });
});
