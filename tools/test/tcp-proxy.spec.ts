import { connect, createServer, type Server, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TcpProxy, type TappedPacket } from '../src/sim/tcp-proxy.js';
import { waitFor } from './support/wait.js';

/** A target that records what each connection received and answers nothing unless told. */
interface Target {
  server: Server;
  port: number;
  sockets: Socket[];
  received: Map<Socket, string>;
}

async function startTarget(onConnection?: (socket: Socket) => void): Promise<Target> {
  const sockets: Socket[] = [];
  const received = new Map<Socket, string>();
  const server = createServer({ noDelay: true }, (socket) => {
    sockets.push(socket);
    received.set(socket, '');
    socket.on('data', (chunk) => received.set(socket, (received.get(socket) ?? '') + chunk.toString()));
    socket.on('error', () => undefined);
    onConnection?.(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : 0, sockets, received };
}

function dial(port: number, localAddress?: string): Promise<{ socket: Socket; data: () => string; closed: () => boolean }> {
  return new Promise((resolve, reject) => {
    let data = '';
    let closed = false;
    const socket = connect({ host: '127.0.0.1', port, noDelay: true, ...(localAddress ? { localAddress } : {}) }, () =>
      resolve({ socket, data: () => data, closed: () => closed }),
    );
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.on('close', () => (closed = true));
    socket.once('error', reject);
  });
}

let target: Target;
let proxy: TcpProxy;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  target = await startTarget();
  proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: target.port }, mqtt: false });
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
  await proxy.close();
  for (const socket of target.sockets) socket.destroy();
  await new Promise((resolve) => target.server.close(resolve));
});

describe('TcpProxy', () => {
  it('forwards both ways and shows the source address the client dialled from', async () => {
    const client = await dial(proxy.port, '127.1.2.3');
    cleanups.push(() => client.socket.destroy());
    client.socket.write('ping');
    await waitFor(() => target.received.get(target.sockets[0] as Socket) === 'ping', 'bytes reach the target');
    (target.sockets[0] as Socket).write('pong');
    await waitFor(() => client.data() === 'pong', 'bytes come back');
    expect(proxy.connections().map((c) => c.clientAddress)).toEqual(['127.1.2.3']);
    // The target sees the client's address too (the proxy dials from it).
    expect(target.sockets[0]?.remoteAddress).toBe('127.1.2.3');
  });

  it('cuts an MQTT client id, including its later connections, until healed', async () => {
    await proxy.close();
    proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: target.port } });
    const connectOf = (clientId: string) => mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: false, keepalive: 5 });
    const first = await dial(proxy.port);
    cleanups.push(() => first.socket.destroy());
    first.socket.write(connectOf('dev-cut'));
    await waitFor(() => target.sockets.length === 1 && (target.received.get(target.sockets[0] as Socket) ?? '').includes('dev-cut'), 'first CONNECT forwarded');
    proxy.cutClient('dev-cut');
    expect(proxy.connections()[0]?.isCut).toBe(true);
    const again = await dial(proxy.port);
    const other = await dial(proxy.port);
    cleanups.push(() => again.socket.destroy(), () => other.socket.destroy());
    again.socket.write(connectOf('dev-cut'));
    other.socket.write(connectOf('dev-ok'));
    await waitFor(() => [...target.received.values()].some((text) => text.includes('dev-ok')), 'the other client gets through');
    await waitFor(() => proxy.connections().some((c) => c.clientId === 'dev-cut' && c.discardedBytes > 0), 'the reconnect is blackholed');
    expect([...target.received.values()].filter((text) => text.includes('dev-cut'))).toHaveLength(1);
    proxy.healClient('dev-cut');
    await waitFor(() => again.closed(), 'the connection that lost its CONNECT is reset on heal');
  });

  it('blackholes on cut: nothing forwarded either way, bytes discarded, the connection stays open', async () => {
    const client = await dial(proxy.port);
    cleanups.push(() => client.socket.destroy());
    client.socket.write('a');
    await waitFor(() => target.received.get(target.sockets[0] as Socket) === 'a', 'first byte forwarded');
    const server = target.sockets[0] as Socket;
    proxy.cut();
    client.socket.write('lost-up');
    server.write('lost-down');
    const [connection] = proxy.connections();
    await waitFor(() => connection?.discardedBytes === 'lost-up'.length + 'lost-down'.length, 'both directions read and dropped');
    expect(target.received.get(server)).toBe('a');
    expect(client.data()).toBe('');
    expect(client.closed()).toBe(false);
    expect(server.destroyed).toBe(false);
    // A close on one side does not cross a dead path either.
    client.socket.destroy();
    await waitFor(() => client.closed(), 'client closed');
    expect(server.destroyed).toBe(false);
    // On heal the other side learns the connection is gone (as a reset would tell it).
    const serverClosed = new Promise((resolve) => server.once('close', resolve));
    proxy.heal();
    await serverClosed;
    await waitFor(() => proxy.connections().length === 0, 'connection forgotten');
  });

  it('resets on heal a connection that lost bytes, and resumes one that did not', async () => {
    const lossy = await dial(proxy.port);
    const quiet = await dial(proxy.port);
    cleanups.push(() => lossy.socket.destroy(), () => quiet.socket.destroy());
    await waitFor(() => target.sockets.length === 2 && proxy.connections().length === 2, 'two connections');
    proxy.cut();
    lossy.socket.write('dropped');
    await waitFor(() => proxy.connections()[0]?.discardedBytes === 7, 'bytes dropped');
    proxy.heal();
    await waitFor(() => lossy.closed(), 'the lossy connection is reset');
    quiet.socket.write('after');
    await waitFor(() => [...target.received.values()].includes('after'), 'the quiet one carries on');
  });

  it('cuts one connection without touching the others', async () => {
    const a = await dial(proxy.port);
    const b = await dial(proxy.port);
    cleanups.push(() => a.socket.destroy(), () => b.socket.destroy());
    await waitFor(() => proxy.connections().length === 2 && target.sockets.length === 2, 'two connections');
    const [first, second] = proxy.connections();
    first?.cut();
    expect(first?.isCut).toBe(true);
    expect(second?.isCut).toBe(false);
    a.socket.write('x');
    b.socket.write('y');
    await waitFor(() => [...target.received.values()].includes('y') && first?.discardedBytes === 1, 'b forwarded, a dropped');
    expect([...target.received.values()].join('')).toBe('y');
  });

  it('holds connections made while cut without dialling through', async () => {
    proxy.cut();
    const client = await dial(proxy.port);
    cleanups.push(() => client.socket.destroy());
    client.socket.write('hello?');
    await waitFor(() => proxy.connections()[0]?.discardedBytes === 6, 'dropped');
    expect([...target.received.values()].join('')).toBe('');
    expect(client.closed()).toBe(false);
  });

  it('taps MQTT packets in both directions', async () => {
    await proxy.close();
    for (const socket of target.sockets) socket.destroy();
    await new Promise((resolve) => target.server.close(resolve));
    target = await startTarget((socket) => {
      socket.once('data', () => socket.write(mqttPacket.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false })));
    });
    const tapped: TappedPacket[] = [];
    proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: target.port }, tap: (packet) => tapped.push(packet) });
    const client = await dial(proxy.port);
    cleanups.push(() => client.socket.destroy());
    client.socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'dev-1', clean: false, keepalive: 5 }));
    await waitFor(() => tapped.length === 2, 'connect and connack tapped');
    expect(tapped.map((t) => [t.connection, t.direction, t.packet.cmd])).toEqual([
      [1, 'client-to-server', 'connect'],
      [1, 'server-to-client', 'connack'],
    ]);
    expect(tapped[0]?.packet).toMatchObject({ clientId: 'dev-1', clean: false, keepalive: 5 });
  });

  it('close() destroys every connection', async () => {
    const client = await dial(proxy.port);
    await waitFor(() => proxy.connections().length === 1, 'connected');
    await proxy.close();
    await waitFor(() => client.closed(), 'client closed');
    proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: target.port }, mqtt: false });
  });
});
