import 'reflect-metadata';
import { ConfigError, loadConfig } from './app/config.js';
import { createLogger } from './platform/common/logger.js';
import { PortInUseError, describeMove } from './platform/common/ports.js';
import { startControlPlane } from './app/create-app.js';
import { INITIAL_CREDENTIALS_FILE } from './app/bootstrap/initial-credentials.js';
import { CpuProfiler } from './platform/common/cpu-profiler.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const logger = createLogger(config.logLevel, { prettyWhenTty: true });
  const profiler = config.cpuProfileDir === undefined ? undefined : new CpuProfiler(config.cpuProfileDir, logger);
  profiler?.arm();
  const cp = await startControlPlane(config, logger);
  for (const move of cp.portMoves) process.stdout.write(`flotilla: ${describeMove(move, config.dataDir)}\n`);
  if (cp.initialCredentials) {
    // Printed once, on purpose, outside the (redacting) log: the operator needs these to sign in.
    process.stdout.write(
      [
        '',
        'Flotilla first start: save these credentials (also in ' + `${config.dataDir}/${INITIAL_CREDENTIALS_FILE}, mode 0600)`,
        `  admin e-mail:     ${cp.initialCredentials.adminEmail}`,
        `  admin password:   ${cp.initialCredentials.adminPassword}`,
        `  gateway API key:  ${cp.initialCredentials.apiKey}`,
        '',
      ].join('\n') + '\n',
    );
  }
  process.stdout.write(`Flotilla control plane on ${cp.url} (MQTT on port ${cp.mqttPort}, database ${cp.database.backend})\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    Promise.all([profiler?.disarm(), cp.close()]).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  if (error instanceof PortInUseError || error instanceof ConfigError) {
    process.stderr.write(`flotilla: ${error.message}\n`);
  } else {
    process.stderr.write(`flotilla: failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
  process.exit(1);
});
