import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
// Brings reply.sendFile into Fastify's types (the plugin itself is registered by useStaticAssets).
import type {} from '@fastify/static';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import type { Logger } from 'pino';
import { type InitialCredentials, ensureInitialCredentials } from './bootstrap/initial-credentials.js';
import { EmbeddedBroker, MQTT_LISTEN_BACKLOG } from '../platform/broker/embedded-broker.js';
import { GlobalErrorFilter } from '../platform/common/error.filter.js';
import { createLogger } from '../platform/common/logger.js';
import { PortInUseError, type PortMove, planPorts, rememberPorts } from '../platform/common/ports.js';
import type { ControlPlaneConfig } from './config.js';
import { type Database, openDatabase } from '../platform/database/index.js';
import { DeviceBrokerSecurity } from '../devices/inventory/device-broker-security.js';
import { DeviceCredentialCache } from '../devices/inventory/device-credentials.js';
import { AppModule } from './app.module.js';
import type { Endpoints } from '../platform/tokens.js';
import { PinoNestLogger } from '../platform/nest-logger.js';

export interface ControlPlane {
  app: NestFastifyApplication;
  config: ControlPlaneConfig;
  database: Database;
  broker: EmbeddedBroker;
  logger: Logger;
  httpPort: number;
  mqttPort: number;
  /** e.g. http://127.0.0.1:8080 */
  url: string;
  /** Set only on the very first start, when the admin user and gateway key were just created. */
  initialCredentials: InitialCredentials | null;
  /** default ports that were taken on this start and moved to the next free one (first start only) */
  portMoves: PortMove[];
  close(): Promise<void>;
}

/** Request bodies above this are refused with 413 before parsing. */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * Starts the whole control plane: ports are planned first (a taken default moves once and is recorded in the data
 * directory; a taken variable-set or recorded port is one clear error), then the database is migrated,
 * the broker and the HTTP server come up. `main.ts` and the tests use this same function.
 */
export async function startControlPlane(config: ControlPlaneConfig, logger: Logger = createLogger(config.logLevel)): Promise<ControlPlane> {
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const plan = await planPorts(config.dataDir, [
    { key: 'http', host: config.http.host, port: config.http.port, setByVariable: config.http.portSetByVariable, variable: 'FLOTILLA_HTTP_PORT', purpose: 'HTTP' },
    { key: 'mqtt', host: config.mqtt.host, port: config.mqtt.port, setByVariable: config.mqtt.portSetByVariable, variable: 'FLOTILLA_MQTT_PORT', purpose: 'MQTT' },
    ...(config.mqtt.tls
      ? [
          {
            key: 'mqttTls' as const,
            host: config.mqtt.host,
            port: config.mqtt.tls.port,
            setByVariable: config.mqtt.tls.portSetByVariable,
            variable: 'FLOTILLA_MQTT_TLS_PORT',
            purpose: 'MQTT over TLS',
          },
        ]
      : []),
  ]);
  const httpPortWanted = plan.ports.http ?? config.http.port;
  for (const move of plan.moves) logger.info({ port: move.from, instead: move.to, variable: move.variable }, 'default port taken: using the next free one');

  const closers: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.reverse()) {
      await close().catch((error: unknown) => logger.error({ err: error }, 'error while shutting down'));
    }
    closers.length = 0;
  };
  try {
    const database = await openDatabase({
      dataDir: config.dataDir,
      databaseUrl: config.database.url,
      migrationsDir: config.database.migrationsDir,
      poolMax: config.database.poolSize,
      logger,
    });
    closers.push(() => database.close());
    const initialCredentials = await ensureInitialCredentials(database, { dataDir: config.dataDir, adminEmail: config.adminEmail, logger });

    // Filled before the first CONNECT is served: a fleet reconnecting after a restart is checked in memory.
    const credentials = new DeviceCredentialCache(database, logger.child({ component: 'credentials' }));
    await credentials.warm();

    const broker = await EmbeddedBroker.start({
      host: config.mqtt.host,
      port: plan.ports.mqtt ?? config.mqtt.port,
      keepaliveLimitSeconds: config.mqtt.keepaliveLimitSeconds,
      maxMessageBytes: config.mqtt.maxMessageBytes,
      maxUnauthenticatedPerAddress: config.mqtt.maxUnauthenticatedPerAddress,
      security: new DeviceBrokerSecurity(credentials),
      tls: config.mqtt.tls
        ? {
            host: config.mqtt.host,
            port: plan.ports.mqttTls ?? config.mqtt.tls.port,
            cert: await readFile(config.mqtt.tls.certFile),
            key: await readFile(config.mqtt.tls.keyFile),
            ca: config.mqtt.tls.caFile ? await readFile(config.mqtt.tls.caFile) : undefined,
          }
        : undefined,
      logger: logger.child({ component: 'broker' }),
    });
    closers.push(() => broker.close());

    // trustProxy: per-address rate limits see the client behind a reverse proxy, not the proxy.
    const adapter = new FastifyAdapter({ bodyLimit: MAX_BODY_BYTES, trustProxy: config.http.trustProxy });
    const endpoints: Endpoints = { httpPort: httpPortWanted, mqttPort: broker.port, mqttTlsPort: broker.tlsPort };
    const app = await NestFactory.create<NestFastifyApplication>(AppModule.register({ config, logger, database, broker, endpoints, credentials }), adapter, {
      logger: new PinoNestLogger(logger.child({ component: 'nest' })),
      abortOnError: false,
    });
    const dashboardDir = dashboardDirectory(config);
    if (dashboardDir) app.useStaticAssets({ root: dashboardDir, prefix: '/', wildcard: false });
    app.useGlobalFilters(new GlobalErrorFilter(logger, dashboardDir));
    // Nest's close ends the event streams and gateway requests (module destroy hooks) before the HTTP server closes;
    // WebSocket connections are upgraded sockets the server would wait for, so they end first.
    closers.push(() => {
      broker.closeWebSockets();
      return app.close();
    });

    // Feature modules subscribe to device topics during init; only then may devices' messages flow.
    await app.init();
    broker.open();
    try {
      // A fleet enrolling at once opens thousands of connections together: Node's default backlog (511) overflows while
      // the loop is busy, and the kernel then drops connections (the devices see resets or 1-3 s SYN retransmits).
      await app.listen({ port: httpPortWanted, host: config.http.host, backlog: MQTT_LISTEN_BACKLOG });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new PortInUseError(httpPortWanted, 'FLOTILLA_HTTP_PORT', 'HTTP');
      }
      throw error;
    }
    const server = app.getHttpServer();
    broker.attachWebSocket(server, '/mqtt');
    const address = server.address();
    const httpPort = typeof address === 'object' && address ? address.port : config.http.port;
    endpoints.httpPort = httpPort;
    const host = config.http.host === '0.0.0.0' || config.http.host === '::' ? '127.0.0.1' : config.http.host;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${httpPort}`;
    // Recorded only once every listener is bound: these are the ports enrolled devices will be given.
    if (Object.keys(plan.remember).length > 0) await rememberPorts(config.dataDir, plan.remember);
    logger.info({ url, mqttPort: broker.port, database: database.backend }, 'control plane ready');
    return {
      app,
      config,
      database,
      broker,
      logger,
      httpPort,
      mqttPort: broker.port,
      url,
      initialCredentials,
      portMoves: plan.moves,
      close: closeAll,
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** The built dashboard at `/`; unknown GET paths fall back to index.html in the error filter. */
function dashboardDirectory(config: ControlPlaneConfig): string | undefined {
  const dir = config.dashboardDir ?? defaultDashboardDir();
  return dir && existsSync(join(dir, 'index.html')) ? dir : undefined;
}

function defaultDashboardDir(): string | undefined {
  // apps/control-plane/{src,dist}/app -> apps/dashboard/dist
  const here = dirname(fileURLToPath(import.meta.url));
  const candidate = resolve(here, '../../../dashboard/dist');
  return existsSync(candidate) ? candidate : undefined;
}
