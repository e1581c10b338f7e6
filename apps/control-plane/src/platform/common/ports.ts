import { readFile, rename, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';

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
  /** the listen backlog (Node's default when absent) */
  backlog?: number;
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
    server.listen({ port: request.port, host: request.host, ...(request.backlog === undefined ? {} : { backlog: request.backlog }) });
  });
}

/** Fails fast, before slow start-up work, when a fixed port is already taken. */
export async function assertPortFree(request: PortRequest): Promise<void> {
  if (request.port === 0) return;
  const probe = createServer();
  await listenOn(probe, request);
  await new Promise<void>((done) => probe.close(() => done()));
}

/** Where a data directory keeps the ports its first start chose: `<dataDir>/ports.json`. */
export const PORTS_FILE = 'ports.json';

/** A port recorded in ports.json is taken: moving it would strand the devices that were given it. */
export class RememberedPortInUseError extends PortInUseError {
  constructor(port: number, variable: string, purpose: string, file: string) {
    super(port, variable, purpose);
    this.message =
      `Port ${port} (${purpose}) is already in use, and it cannot move: this data directory's devices are enrolled on it ` +
      `(recorded in ${file}); stop the process that holds it, or set ${variable} and enroll the devices again`;
    this.name = 'RememberedPortInUseError';
  }
}

export type PortKey = 'http' | 'mqtt' | 'mqttTls';

export interface PlannedPort extends PortRequest {
  key: PortKey;
  /** true when an environment variable set this port: it is used as is, never moved and never recorded */
  setByVariable: boolean;
}

/** A default port that was taken, and the free port used instead. */
export interface PortMove {
  key: PortKey;
  purpose: string;
  variable: string;
  from: number;
  to: number;
}

export interface PortPlan {
  ports: Record<PortKey, number | undefined>;
  moves: PortMove[];
  /** the ports to record in ports.json once they are bound (those not set by a variable) */
  remember: Partial<Record<PortKey, number>>;
}

/** How far past a taken default port the first start looks for a free one. */
const MOVE_RANGE = 100;

const rememberedPortsSchema = z.object({
  http: z.number().int().min(1).max(65535).optional(),
  mqtt: z.number().int().min(1).max(65535).optional(),
  mqttTls: z.number().int().min(1).max(65535).optional(),
});

export async function readRememberedPorts(dataDir: string): Promise<Partial<Record<PortKey, number>>> {
  const file = join(dataDir, PORTS_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw error;
  }
  const parsed = rememberedPortsSchema.safeParse(safeJsonParse(text));
  if (!parsed.success) throw new Error(`${file} is not a valid ports file (${parsed.error.issues[0]?.message ?? 'bad JSON'}): fix or delete it`);
  return parsed.data;
}

function safeJsonParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export async function rememberPorts(dataDir: string, ports: Partial<Record<PortKey, number>>): Promise<void> {
  const file = join(dataDir, PORTS_FILE);
  const merged = { ...(await readRememberedPorts(dataDir)), ...ports };
  // Written whole, then renamed: a reader never sees half a file.
  await writeFile(`${file}.tmp`, `${JSON.stringify(merged, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
}

/**
 * Decides every listener's port before anything slow starts. A port set by a variable is used as is (taken: the
 * one-line PortInUseError). Otherwise the port recorded in `<dataDir>/ports.json` by an earlier start wins, since
 * enrolled devices were given it (taken: RememberedPortInUseError). With neither, the default is used, or, when
 * another process holds it (Mosquitto on 1883), the next free port above it.
 */
export async function planPorts(dataDir: string, wanted: PlannedPort[]): Promise<PortPlan> {
  const remembered = await readRememberedPorts(dataDir);
  const plan: PortPlan = { ports: { http: undefined, mqtt: undefined, mqttTls: undefined }, moves: [], remember: {} };
  const chosen = new Set<number>();
  for (const request of wanted) {
    if (request.setByVariable || request.port === 0) {
      await assertPortFree(request);
      plan.ports[request.key] = request.port;
      continue;
    }
    const recorded = remembered[request.key];
    if (recorded !== undefined) {
      await assertPortFree({ ...request, port: recorded }).catch((error: unknown) => {
        throw error instanceof PortInUseError
          ? new RememberedPortInUseError(recorded, request.variable, request.purpose, join(dataDir, PORTS_FILE))
          : error;
      });
      plan.ports[request.key] = recorded;
      chosen.add(recorded);
      continue;
    }
    const port = await firstFreePort(request, chosen);
    if (port !== request.port) plan.moves.push({ key: request.key, purpose: request.purpose, variable: request.variable, from: request.port, to: port });
    plan.ports[request.key] = port;
    plan.remember[request.key] = port;
    chosen.add(port);
  }
  return plan;
}

async function firstFreePort(request: PlannedPort, skip: Set<number>): Promise<number> {
  for (let port = request.port; port <= Math.min(65535, request.port + MOVE_RANGE); port++) {
    if (skip.has(port)) continue;
    try {
      await assertPortFree({ ...request, port });
      return port;
    } catch (error) {
      if (!(error instanceof PortInUseError)) throw error;
    }
  }
  throw new PortInUseError(request.port, request.variable, request.purpose);
}

/** The one line a moved port is announced with. */
export function describeMove(move: PortMove, dataDir: string): string {
  return (
    `Port ${move.from} (${move.purpose}) is taken by another process: using ${move.to} instead, ` +
    `recorded in ${join(dataDir, PORTS_FILE)} for later starts and enrolled devices (set ${move.variable} to choose)`
  );
}
