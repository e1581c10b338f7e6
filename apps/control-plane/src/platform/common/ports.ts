import { createServer, type Server } from 'node:net';

/** Raised when a port the control plane needs is held by another process. */
export class PortInUseError extends Error {
  constructor(
    readonly port: number,
    readonly variable: string,
    readonly purpose: string,
  ) {
    super(`Port ${port} (${purpose}) is already in use: set ${variable} to a free port, e.g. ${variable}=${port + 1}`);
    this.name = 'PortInUseError';
  }
}

export interface PortRequest {
  host: string;
  port: number;
  /** The environment variable a user changes to move this listener. */
  variable: string;
  purpose: string;
}

/** Binds `server`, turning EADDRINUSE into a PortInUseError that names the variable to change. */
export function listenOn(server: Server, request: PortRequest): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(error.code === 'EADDRINUSE' ? new PortInUseError(request.port, request.variable, request.purpose) : error);
    };
    const onListening = () => {
      server.off('error', onError);
      const address = server.address();
      resolvePort(typeof address === 'object' && address ? address.port : request.port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(request.port, request.host);
  });
}

/** Fails fast, before slow start-up work, when a fixed port is already taken. */
export async function assertPortFree(request: PortRequest): Promise<void> {
  if (request.port === 0) return;
  const probe = createServer();
  await listenOn(probe, request);
  await new Promise<void>((done) => probe.close(() => done()));
}
