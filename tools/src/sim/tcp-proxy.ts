import { connect, createServer, type Server, type Socket } from 'node:net';
import mqttPacket, { type Packet } from 'mqtt-packet';

export type TapDirection = 'client-to-server' | 'server-to-client';

/** One MQTT packet that went through the proxy (only forwarded bytes are parsed: what a blackhole ate is not seen). */
export interface TappedPacket {
  /** the proxy's id of the TCP connection (1, 2, ...) */
  connection: number;
  direction: TapDirection;
  packet: Packet;
  /** Date.now() when the packet was parsed */
  at: number;
}

export interface TcpProxyOptions {
  /** where connections are forwarded */
  target: { host: string; port: number };
  /** listen address (default 127.0.0.1) and port (default: a free one) */
  host?: string;
  port?: number;
  /** parse the forwarded bytes as MQTT 3.1.1 in both directions and report every packet */
  tap?: (packet: TappedPacket) => void;
  /**
   * dial the target from the client's own address when it is in 127.0.0.0/8 (default true), so the target sees the
   * same spread of peer addresses as without the proxy
   */
  preserveSourceAddress?: boolean;
  /**
   * the traffic is MQTT (default true): each connection's CONNECT is read before anything is forwarded, so
   * `cutClient(clientId)` can find it; set false to proxy other protocols
   */
  mqtt?: boolean;
}

/**
 * One client connection through the proxy. While cut, bytes from either side are read and discarded and a close
 * on one side is not passed on (a dead path carries no FIN either); on heal, a connection that lost bytes or whose
 * other side went away is destroyed on both sides (a byte stream cannot be resynchronised, and a peer that forgot
 * the connection answers with a reset), the others carry on.
 */
export class ProxyConnection {
  private cutHere = false;
  private lostBytes = false;
  /** bytes read and dropped while cut, both directions */
  discardedBytes = 0;
  private upstreamOpen = false;
  private closed = false;
  private readonly pendingUp: Buffer[] = [];
  /** the MQTT client id of the CONNECT sent on this connection, once seen */
  clientId: string | undefined;
  private sniffer: ReturnType<typeof mqttPacket.parser> | undefined;
  private held: Buffer[] | undefined;

  constructor(
    readonly id: number,
    private readonly proxy: TcpProxy,
    private readonly client: Socket,
    private readonly upstream: Socket,
    private readonly tap: ((direction: TapDirection, chunk: Buffer) => void) | undefined,
  ) {
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on('data', (chunk) => this.fromClient(chunk));
    upstream.on('data', (chunk) => this.fromServer(chunk));
    upstream.once('connect', () => {
      this.upstreamOpen = true;
      for (const chunk of this.pendingUp.splice(0)) upstream.write(chunk);
    });
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    client.once('close', () => this.sideClosed(upstream));
    upstream.once('close', () => this.sideClosed(client));
  }

  /** the client's address as the proxy sees it (the source address a simulated device dialled from) */
  get clientAddress(): string {
    return this.client.remoteAddress ?? '';
  }

  get clientPort(): number {
    return this.client.remotePort ?? 0;
  }

  /** true while nothing is forwarded on this connection (cut itself or the whole proxy cut) */
  get isCut(): boolean {
    return this.cutHere || this.proxy.isCut;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  cut(): void {
    this.cutHere = true;
  }

  heal(): void {
    this.cutHere = false;
    this.resume();
  }

  /** closes both sides at once (as a reset would) */
  destroy(): void {
    this.client.destroy();
    this.upstream.destroy();
  }

  /** @internal called on heal of the connection or of the whole proxy */
  resume(): void {
    if (this.isCut) return;
    if (this.lostBytes || this.client.destroyed || this.upstream.destroyed) this.destroy();
  }

  private fromClient(chunk: Buffer): void {
    // Until the CONNECT is seen, bytes are held: a client id cut by the proxy must not get a single byte through.
    if (this.clientId === undefined && this.proxy.sniffsClientIds) {
      this.held ??= [];
      this.held.push(chunk);
      this.sniffer ??= this.makeSniffer();
      this.sniffer.parse(chunk);
      if (this.clientId === undefined) return;
      this.sniffer = undefined;
      const held = Buffer.concat(this.held);
      this.held = undefined;
      if (this.proxy.isClientCut(this.clientId)) this.cutHere = true;
      chunk = held;
    }
    if (this.isCut) {
      this.lostBytes = true;
      this.discardedBytes += chunk.length;
      return;
    }
    this.tap?.('client-to-server', chunk);
    if (this.upstreamOpen) this.upstream.write(chunk);
    else this.pendingUp.push(chunk);
  }

  private makeSniffer(): ReturnType<typeof mqttPacket.parser> {
    const sniffer = mqttPacket.parser({ protocolVersion: 4 });
    sniffer.on('packet', (packet: Packet) => {
      this.clientId ??= packet.cmd === 'connect' ? packet.clientId : '';
    });
    sniffer.on('error', () => {
      this.clientId ??= '';
    });
    return sniffer;
  }

  private fromServer(chunk: Buffer): void {
    if (this.isCut) {
      this.lostBytes = true;
      this.discardedBytes += chunk.length;
      return;
    }
    this.tap?.('server-to-client', chunk);
    this.client.write(chunk);
  }

  private sideClosed(other: Socket): void {
    if (!this.isCut) other.destroy();
    if (this.client.destroyed && this.upstream.destroyed && !this.closed) {
      this.closed = true;
      this.proxy.forget(this);
    }
  }
}

/**
 * A TCP proxy on loopback in front of a broker (or any TCP service), for network faults that look like real ones:
 * `cut()` blackholes (connections stay open, nothing is forwarded either way, no RST), `heal()` lets traffic through
 * again. Optionally taps MQTT packets in both directions (conformance recording).
 */
export class TcpProxy {
  private cutAll = false;
  private nextId = 1;
  private readonly cutClients = new Set<string>();
  private readonly open = new Map<number, ProxyConnection>();

  private sniffing: boolean;

  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    private readonly options: TcpProxyOptions,
  ) {
    this.sniffing = options.mqtt ?? true;
  }

  static start(options: TcpProxyOptions): Promise<TcpProxy> {
    const host = options.host ?? '127.0.0.1';
    const ref: { proxy?: TcpProxy } = {};
    const server = createServer({ noDelay: true }, (socket) => ref.proxy?.accept(socket));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, host, () => {
        server.off('error', reject);
        const address = server.address();
        const port = typeof address === 'object' && address ? address.port : 0;
        ref.proxy = new TcpProxy(server, host, port, options);
        resolve(ref.proxy);
      });
    });
  }

  /** `mqtt://host:port` of the proxy */
  get url(): string {
    return `mqtt://${this.host}:${this.port}`;
  }

  get isCut(): boolean {
    return this.cutAll;
  }

  /** the open connections, oldest first */
  connections(): ProxyConnection[] {
    return [...this.open.values()];
  }

  /** blackholes every connection, open and future */
  cut(): void {
    this.cutAll = true;
  }

  /** lifts the whole-proxy cut, every per-connection cut and every client-id cut */
  heal(): void {
    this.cutAll = false;
    this.cutClients.clear();
    for (const connection of this.connections()) connection.heal();
  }

  /**
   * Blackholes an MQTT client id: its open connections now, and every later connection whose CONNECT names it (so a
   * device that reconnects stays cut off until healed). The proxy then reads each connection's CONNECT before
   * forwarding anything.
   */
  cutClient(clientId: string): void {
    if (!this.sniffing) throw new Error('cutClient needs a proxy started with mqtt: true');
    this.cutClients.add(clientId);
    for (const connection of this.connections()) if (connection.clientId === clientId) connection.cut();
  }

  /** lifts a client-id cut (and the cut of its connections) */
  healClient(clientId: string): void {
    this.cutClients.delete(clientId);
    for (const connection of this.connections()) if (connection.clientId === clientId) connection.heal();
  }

  /** @internal */
  isClientCut(clientId: string): boolean {
    return this.cutClients.has(clientId);
  }

  /** @internal whether connections read their CONNECT's client id */
  get sniffsClientIds(): boolean {
    return this.sniffing;
  }

  /** stops listening and destroys every connection */
  close(): Promise<void> {
    for (const connection of this.connections()) connection.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** @internal */
  forget(connection: ProxyConnection): void {
    this.open.delete(connection.id);
  }

  private accept(client: Socket): void {
    const id = this.nextId++;
    const from = client.remoteAddress?.replace(/^::ffff:/, '');
    const keepSource = (this.options.preserveSourceAddress ?? true) && from !== undefined && from.startsWith('127.');
    const upstream = connect({ host: this.options.target.host, port: this.options.target.port, noDelay: true, ...(keepSource ? { localAddress: from } : {}) });
    const tap = this.options.tap;
    let tapper: ((direction: TapDirection, chunk: Buffer) => void) | undefined;
    if (tap) {
      const parsers = {
        'client-to-server': mqttPacket.parser({ protocolVersion: 4 }),
        'server-to-client': mqttPacket.parser({ protocolVersion: 4 }),
      };
      for (const direction of ['client-to-server', 'server-to-client'] as const) {
        parsers[direction].on('packet', (packet: Packet) => tap({ connection: id, direction, packet, at: Date.now() }));
        parsers[direction].on('error', () => undefined);
      }
      tapper = (direction, chunk) => parsers[direction].parse(chunk);
    }
    this.open.set(id, new ProxyConnection(id, this, client, upstream, tapper));
  }
}
