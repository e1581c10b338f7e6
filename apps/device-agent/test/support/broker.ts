import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Aedes } from 'aedes';
import { createWebSocketStream, WebSocketServer } from 'ws';

export type TestBroker = {
  aedes: Aedes;
  port: number;
  url: string;
  /** MQTT over WebSocket at `/mqtt`, as the control plane serves it; only with `{ websocket: true }`. */
  wsUrl?: string;
  /** Closes the listener and drops every connection; sessions stay in the aedes instance. */
  down: () => Promise<void>;
  /** Listens again on the same port. */
  up: () => Promise<void>;
  close: () => Promise<void>;
};

/** A real embedded aedes 1.x broker on 127.0.0.1 with TCP_NODELAY, checking username/password. */
export type TestBrokerOptions = {
  /** Also serve MQTT over WebSocket. */
  websocket?: boolean;
  /**
   * Client id of the (fake) control plane: other clients are held at CONNECT until it has subscribed, as the real
   * control plane holds device connections until its subscriptions exist. Without it, a device that reconnects
   * before the fake control plane resubscribes sends its outbox replay into the void.
   */
  controlPlaneClientId?: string;
};

export async function startBroker(accounts: Record<string, string>, options: TestBrokerOptions = {}): Promise<TestBroker> {
  const aedes = await Aedes.createBroker();
  const gate = options.controlPlaneClientId;
  let controlPlaneSubscribed = false;
  if (gate) {
    aedes.on('subscribe', (_subscriptions, client) => {
      if (client?.id === gate) controlPlaneSubscribed = true;
    });
    aedes.on('clientDisconnect', (client) => {
      if (client.id === gate) controlPlaneSubscribed = false;
    });
  }
  aedes.authenticate = (client, username, password, done) => {
    const ok = username !== undefined && accounts[username] !== undefined && password?.toString() === accounts[username] && client.id === username;
    if (!gate || client.id === gate || !ok) return done(null, ok);
    const until = Date.now() + 10_000;
    const wait = (): void => {
      if (controlPlaneSubscribed || Date.now() > until) done(null, controlPlaneSubscribed);
      else setTimeout(wait, 10);
    };
    wait();
  };
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  let port = 0;
  const listen = async (): Promise<void> => {
    const next = createServer({ noDelay: true }, (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      aedes.handle(socket);
    });
    await new Promise<void>((resolve, reject) => {
      next.once('error', reject);
      next.listen(port, '127.0.0.1', () => resolve());
    });
    port = (next.address() as AddressInfo).port;
    server = next;
  };
  const down = async (): Promise<void> => {
    const current = server;
    server = undefined;
    for (const socket of sockets) socket.destroy();
    if (current) await new Promise<void>((resolve) => current.close(() => resolve()));
  };
  await listen();
  let web: { http: HttpServer; wss: WebSocketServer } | undefined;
  if (options.websocket) {
    const http = createHttpServer();
    const wss = new WebSocketServer({ server: http, path: '/mqtt' });
    wss.on('connection', (socket, request) => aedes.handle(createWebSocketStream(socket), request));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    web = { http, wss };
  }
  const wsPort = web ? (web.http.address() as AddressInfo).port : undefined;
  return {
    aedes,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    ...(wsPort ? { wsUrl: `ws://127.0.0.1:${wsPort}/mqtt` } : {}),
    down,
    up: listen,
    close: async () => {
      await down();
      if (web) {
        for (const client of web.wss.clients) client.terminate();
        await new Promise<void>((resolve) => web.wss.close(() => resolve()));
        await new Promise<void>((resolve) => web.http.close(() => resolve()));
      }
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
    },
  };
}
