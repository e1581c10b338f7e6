import { createServer, type Server as NetServer } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { Aedes, type AuthenticateError, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Logger } from 'pino';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { listenOn } from '../common/ports.js';
import { ConnectionAdmission, GuardedConnection, type MqttGuardLimits } from './mqtt-guard.js';
import { WorkQueue } from './work-queue.js';
import { indexRetainedMessages } from './retained-index.js';

/** Who a connected MQTT client is, once authenticated. */
export interface BrokerPrincipal {
  deviceId: string;
}

/** Pluggable security: the broker itself knows nothing of devices or credentials. */
export interface BrokerSecurity {
  authenticate(clientId: string, username: string | undefined, password: Buffer | undefined): Promise<BrokerPrincipal | null>;
  canPublish(principal: BrokerPrincipal, topic: string): boolean;
  canSubscribe(principal: BrokerPrincipal, filter: string): boolean;
}

export interface EmbeddedBrokerOptions {
  host: string;
  port: number;
  keepaliveLimitSeconds: number;
  maxMessageBytes: number;
  /** connections from one source address at once that have not sent their whole CONNECT yet; 0: no cap (default 64) */
  maxUnauthenticatedPerAddress?: number;
  /** CONNECTs authenticated at once; the rest wait their turn (default 256) */
  maxConcurrentAuthentications?: number;
  /** time from accepting a connection to its CONNECT packet (aedes stops the clock there, before authentication) */
  connectTimeoutMs?: number;
  drainTimeoutMs?: number;
  security: BrokerSecurity;
  logger: Logger;
  /** MQTT over TLS (mqtts://) on its own port, beside plain TCP. */
  tls?: { host: string; port: number; cert: Buffer; key: Buffer; ca?: Buffer | undefined } | undefined;
}

export interface BrokerMessage {
  topic: string;
  /** The ACL only lets a device publish under its own subtree, so the topic names the sender. */
  payload: Buffer;
  retain: boolean;
}

type Handler = (message: BrokerMessage) => void;

const PRINCIPAL = Symbol('flotilla.principal');
type ClientWithPrincipal = Client & { [PRINCIPAL]?: BrokerPrincipal };

/**
 * A PUBLISH carries its payload after a topic (2 + at most ~120 bytes with our ACL) and a packet id (2): the packet cap
 * is the payload cap plus room for those, so every payload the size check in authorizePublish accepts gets through.
 */
export const PUBLISH_HEADER_ALLOWANCE_BYTES = 4096;
/**
 * Pending TCP connections the kernel queues before Node accepts them (Node's default is 511; Linux caps it at
 * net.core.somaxconn, 4096 here). A fleet reconnecting at once overflows 511 while the loop is busy: the kernel then
 * drops SYNs and the devices wait out 1-3 s retransmissions.
 */
export const MQTT_LISTEN_BACKLOG = 4096;
/** A CONNECT carries a client id, a username, a device secret (no will): far under this. */
export const MAX_UNAUTHENTICATED_BYTES = 16 * 1024;

function authError(message: string, returnCode: number): AuthenticateError {
  const error: AuthenticateError = Object.assign(new Error(message), { returnCode });
  return error;
}

/**
 * aedes embedded in the control plane: MQTT over TCP (TCP_NODELAY, see FACTS) and over WebSocket.
 * The narrow surface (publish, subscribe, disconnect) is what a clustered broker must provide too.
 */
export class EmbeddedBroker {
  private constructor(
    private readonly aedes: Aedes,
    private readonly tcp: NetServer,
    readonly port: number,
    private readonly logger: Logger,
    private readonly gate: ConnectionGate,
    private readonly admission: ConnectionAdmission,
    private readonly limits: MqttGuardLimits,
    private readonly tlsServer: TlsServer | undefined,
    /** the bound mqtts:// port, when TLS is configured */
    readonly tlsPort: number | undefined,
  ) {}

  private wss: WebSocketServer | undefined;

  static async start(options: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
    const { security, logger } = options;
    // A storm of CONNECTs waits here in arrival order instead of starting unbounded work (a credential lookup that
    // misses the cache reads the database). The wait does not count against aedes' connect timeout, which ends when
    // the CONNECT arrives, nor against the per-address cap, which ends there too (see ConnectionAdmission).
    const authentications = new WorkQueue(options.maxConcurrentAuthentications ?? 256);
    const aedes = await Aedes.createBroker({
      id: 'flotilla-control-plane',
      keepaliveLimit: options.keepaliveLimitSeconds,
      connectTimeout: options.connectTimeoutMs ?? 10_000,
      drainTimeout: options.drainTimeoutMs ?? 30_000,
      maxClientsIdLength: 64,
      authenticate: (client, username, password, done) => {
        authentications
          // A device that gave up waiting (and will retry) is not authenticated for nothing: a storm must not feed itself.
          .run(() => (client.closed ? Promise.resolve(null) : security.authenticate(client.id, username ?? undefined, password ?? undefined)))
          .then((principal) => {
            if (!principal) {
              done(authError('bad username or password', 4), false);
              return;
            }
            (client as ClientWithPrincipal)[PRINCIPAL] = principal;
            // From here the client may send packets up to the full cap and no longer counts against its address.
            const conn = (client as Client & { conn?: unknown }).conn;
            if (conn instanceof GuardedConnection) conn.markAuthenticated();
            done(null, true);
          })
          .catch((error: unknown) => {
            logger.error({ err: error, clientId: client.id }, 'MQTT authentication failed');
            done(authError('server unavailable', 3), false);
          });
      },
      authorizePublish: (client, packet, done) => {
        if (!client) return done(null); // the control plane's own publish
        const principal = (client as ClientWithPrincipal)[PRINCIPAL];
        const size = Buffer.isBuffer(packet.payload) ? packet.payload.length : Buffer.byteLength(String(packet.payload));
        if (size > options.maxMessageBytes) {
          logger.warn({ deviceId: principal?.deviceId, topic: packet.topic, size }, 'MQTT message over the size limit');
          return done(new Error(`message of ${size} bytes exceeds ${options.maxMessageBytes}`));
        }
        if (!principal || !security.canPublish(principal, packet.topic)) {
          logger.warn({ deviceId: principal?.deviceId, topic: packet.topic }, 'MQTT publish denied');
          return done(new Error('publish not authorized'));
        }
        done(null);
      },
      authorizeSubscribe: (client, subscription: Subscription, done) => {
        const principal = (client as ClientWithPrincipal)[PRINCIPAL];
        if (!principal || !security.canSubscribe(principal, subscription.topic)) {
          logger.warn({ deviceId: principal?.deviceId, topic: subscription.topic }, 'MQTT subscribe denied');
          // A null subscription answers SUBACK 0x80 without dropping the connection.
          return done(null, null);
        }
        done(null, subscription);
      },
    });
    // Retained messages looked up by topic on SUBSCRIBE, not scanned (quadratic in the fleet otherwise).
    if (!indexRetainedMessages((aedes as { persistence?: unknown }).persistence)) logger.warn('aedes persistence of an unknown shape: retained messages not indexed');
    aedes.on('clientError', (client, error) => {
      logger.debug({ clientId: client.id, err: error.message }, 'MQTT client error');
    });
    aedes.on('connectionError', (client, error) => {
      logger.debug({ clientId: client.id, err: error.message }, 'MQTT connection error');
    });
    const gate = new ConnectionGate((stream, request) => aedes.handle(stream, request));
    const limits: MqttGuardLimits = {
      maxPacketBytes: options.maxMessageBytes + PUBLISH_HEADER_ALLOWANCE_BYTES,
      maxUnauthenticatedBytes: MAX_UNAUTHENTICATED_BYTES,
    };
    const admission = new ConnectionAdmission(limits, options.maxUnauthenticatedPerAddress ?? 64, logger);
    const admit = (socket: Duplex, address: string | undefined, request?: IncomingMessage) => {
      const guarded = admission.admit(socket, address);
      if (guarded) gate.handle(guarded, request);
    };
    const tcp = createServer({ noDelay: true }, (socket) => admit(socket, socket.remoteAddress));
    const backlog = MQTT_LISTEN_BACKLOG;
    const tlsServer = options.tls
      ? createTlsServer({ cert: options.tls.cert, key: options.tls.key, ...(options.tls.ca ? { ca: options.tls.ca } : {}) }, (socket) => {
          socket.setNoDelay(true);
          admit(socket, socket.remoteAddress);
        })
      : undefined;
    try {
      const port = await listenOn(tcp, {
        host: options.host,
        port: options.port,
        variable: 'FLOTILLA_MQTT_PORT',
        purpose: 'MQTT',
        backlog,
      });
      const tlsPort =
        tlsServer && options.tls
          ? await listenOn(tlsServer, { host: options.tls.host, port: options.tls.port, variable: 'FLOTILLA_MQTT_TLS_PORT', purpose: 'MQTT over TLS', backlog })
          : undefined;
      logger.info({ port, tlsPort }, 'MQTT broker listening');
      return new EmbeddedBroker(aedes, tcp, port, logger, gate, admission, limits, tlsServer, tlsPort);
    } catch (error) {
      if (tcp.listening) await new Promise((done) => tcp.close(done));
      await new Promise<void>((done) => aedes.close(() => done()));
      throw error;
    }
  }

  /**
   * Starts serving the connections accepted so far and all later ones. The port is bound early (so a taken port fails
   * start-up at once) but clients wait until the control plane's own subscriptions exist, or a device's first hello
   * would reach nobody.
   */
  open(): void {
    this.gate.open();
  }

  /** Serves MQTT over WebSocket on `path` of an existing HTTP server. */
  attachWebSocket(server: HttpServer, path = '/mqtt'): void {
    // ws would otherwise buffer a frame of up to 100 MiB before the guard sees a byte of it.
    const wss = new WebSocketServer({ noServer: true, maxPayload: this.limits.maxPacketBytes });
    this.wss = wss;
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = new URL(request.url ?? '/', 'http://localhost');
      if (url.pathname !== path) return;
      wss.handleUpgrade(request, socket, head, (ws) => {
        const stream = createWebSocketStream(ws);
        stream.on('error', () => ws.terminate());
        const guarded = this.admission.admit(stream, request.socket.remoteAddress);
        if (guarded) this.gate.handle(guarded, request);
      });
    });
  }

  get closed(): boolean {
    return this.aedes.closed;
  }

  /** Cuts a client's live session (e.g. a revoked device). */
  disconnect(clientId: string): boolean {
    const clients = (this.aedes as unknown as { clients: Record<string, { close(): void } | undefined> }).clients;
    const client = clients[clientId];
    client?.close();
    return client !== undefined;
  }

  /** Connections from `address` that have not authenticated yet. */
  unauthenticatedFrom(address: string): number {
    return this.admission.pendingFrom(address);
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  /** Whether a client with this id has a live session now (a clustered broker answers for every node). */
  isConnected(clientId: string): boolean {
    return (this.aedes as unknown as { clients: Record<string, unknown> }).clients[clientId] !== undefined;
  }

  /**
   * Called after an authenticated client's session ended for any reason (DISCONNECT, lost socket, keepalive timeout,
   * taken over by a new connection with the same id, cut by `disconnect`). Returns a function that removes the hook.
   */
  onClientDisconnect(handler: (clientId: string, reason: 'closed' | 'keepalive-timeout') => void): () => void {
    const timedOut = new WeakSet<Client>();
    const onTimeout = (client: Client) => timedOut.add(client);
    const onDisconnect = (client: Client) => {
      try {
        handler(client.id, timedOut.has(client) ? 'keepalive-timeout' : 'closed');
      } catch (error) {
        this.logger.error({ err: error, clientId: client.id }, 'client disconnect handler failed');
      }
    };
    this.aedes.on('keepaliveTimeout', onTimeout);
    this.aedes.on('clientDisconnect', onDisconnect);
    return () => {
      this.aedes.off('keepaliveTimeout', onTimeout);
      this.aedes.off('clientDisconnect', onDisconnect);
    };
  }

  publish(topic: string, payload: Buffer | string, options: { qos?: 0 | 1; retain?: boolean } = {}): Promise<void> {
    const packet = {
      cmd: 'publish',
      topic,
      payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
      qos: options.qos ?? 1,
      retain: options.retain ?? false,
      dup: false,
    } as PublishPacket;
    return new Promise((resolve, reject) => this.aedes.publish(packet, (error) => (error ? reject(error) : resolve())));
  }

  /** Subscribes the control plane itself; returns an unsubscribe function. */
  subscribe(filter: string, handler: Handler): Promise<() => Promise<void>> {
    const deliver = (packet: PublishPacket, callback: () => void) => {
      try {
        handler({
          topic: packet.topic,
          payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(String(packet.payload)),
          retain: packet.retain,
        });
      } catch (error) {
        this.logger.error({ err: error, topic: packet.topic }, 'MQTT handler failed');
      } finally {
        callback();
      }
    };
    return new Promise((resolve) =>
      this.aedes.subscribe(filter, deliver, () =>
        resolve(() => new Promise<void>((done) => this.aedes.unsubscribe(filter, deliver, () => done()))),
      ),
    );
  }

  /**
   * Ends MQTT-over-WebSocket connections and refuses new ones. The HTTP server's close waits for its upgraded sockets,
   * which it cannot end itself, so this runs before it (a client that never sends CONNECT would hold it 10 s).
   */
  closeWebSockets(): void {
    this.wss?.clients.forEach((ws) => ws.terminate());
    this.wss?.close();
  }

  close(): Promise<void> {
    this.closeWebSockets();
    const tlsClosed = this.tlsServer ? new Promise((done) => this.tlsServer?.close(done)) : Promise.resolve();
    return new Promise<void>((resolve) => {
      this.aedes.close(() => this.tcp.close(() => resolve()));
    }).then(() => tlsClosed.then(() => undefined));
  }
}

/** Holds incoming connections until `open()`, then hands them (and all later ones) to the broker. */
class ConnectionGate {
  private waiting: { stream: Duplex; request: IncomingMessage | undefined }[] | null = [];

  constructor(private readonly accept: (stream: Duplex, request?: IncomingMessage) => void) {}

  handle(stream: Duplex, request?: IncomingMessage): void {
    if (this.waiting === null) {
      this.accept(stream, request);
      return;
    }
    const entry = { stream, request };
    this.waiting.push(entry);
    stream.once('close', () => {
      if (this.waiting) this.waiting = this.waiting.filter((e) => e !== entry);
    });
  }

  open(): void {
    const waiting = this.waiting ?? [];
    this.waiting = null;
    for (const { stream, request } of waiting) if (!stream.destroyed) this.accept(stream, request);
  }
}
