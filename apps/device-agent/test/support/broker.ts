import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Aedes } from 'aedes';

export type TestBroker = {
  aedes: Aedes;
  port: number;
  url: string;
  /** Closes the listener and drops every connection; sessions stay in the aedes instance. */
  down: () => Promise<void>;
  /** Listens again on the same port. */
  up: () => Promise<void>;
  close: () => Promise<void>;
};

/** A real embedded aedes 1.x broker on 127.0.0.1 with TCP_NODELAY, checking username/password. */
export async function startBroker(accounts: Record<string, string>): Promise<TestBroker> {
  const aedes = await Aedes.createBroker();
  aedes.authenticate = (client, username, password, done) => {
    const ok = username !== undefined && accounts[username] !== undefined && password?.toString() === accounts[username] && client.id === username;
    done(null, ok);
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
  return {
    aedes,
    port,
    url: `mqtt://127.0.0.1:${port}`,
    down,
    up: listen,
    close: async () => {
      await down();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
    },
  };
}
