import { parseArgs } from 'node:util';
import { Agent, AGENT_VERSION } from '../agent.js';
import { ConfigError, loadConfig } from '../config/config.js';
import { enroll, readCredentials } from '../credentials.js';
import { installCrashHandlers } from '../crash.js';
import { detectHardware } from '../inventory.js';
import { createLogger } from '../logger.js';

const USAGE = `flotilla-agent ${AGENT_VERSION}

Usage:
  flotilla-agent enroll [--server URL] --token TOKEN [--name NAME] [--config FILE]
  flotilla-agent run [--config FILE]

--server defaults to controlPlaneUrl from the config (FLOTILLA_AGENT_CONTROL_PLANE_URL).

The config file (YAML) may also be given as FLOTILLA_AGENT_CONFIG; every setting can be overridden with a
FLOTILLA_AGENT_* variable (see README).`;

export type CliIo = { out: (line: string) => void; err: (line: string) => void };

const defaultIo: CliIo = { out: (line) => process.stdout.write(`${line}\n`), err: (line) => process.stderr.write(`${line}\n`) };

/** Runs the CLI; resolves with the process exit code. `run` resolves only after a signal-driven shutdown. */
export async function runCli(argv: readonly string[], io: CliIo = defaultIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        server: { type: 'string' },
        token: { type: 'string' },
        name: { type: 'string' },
        config: { type: 'string', short: 'c' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    io.err(`${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
    return 2;
  }
  const [command] = parsed.positionals;
  if (parsed.values.help || !command) {
    io.out(USAGE);
    return command || parsed.values.help ? 0 : 2;
  }

  let config;
  try {
    config = loadConfig({ env, ...(parsed.values.config ? { file: parsed.values.config } : {}) });
  } catch (error) {
    io.err(error instanceof ConfigError ? error.message : String(error));
    return 2;
  }

  if (command === 'enroll') {
    const { token, name } = parsed.values;
    const server = parsed.values.server ?? config.controlPlaneUrl;
    const missing = [server ? undefined : '--server URL (or controlPlaneUrl in the config)', token ? undefined : '--token TOKEN'].filter(Boolean);
    if (!server || !token) {
      io.err(`enroll needs ${missing.join(' and ')}`);
      return 2;
    }
    try {
      const hardware = await detectHardware(config.dataDir, () => Promise.resolve([]));
      const credentials = await enroll({ server, token, dataDir: config.dataDir, request: { agentVersion: AGENT_VERSION, hardware, ...(name ? { name } : {}) } });
      io.out(`enrolled as ${credentials.deviceId}; credentials stored in ${config.dataDir}/credentials.json (mode 0600)`);
      return 0;
    } catch (error) {
      io.err(error instanceof Error ? error.message : String(error));
      return 1;
    }
  }

  if (command === 'run') {
    let credentials;
    try {
      credentials = await readCredentials(config.dataDir);
    } catch (error) {
      io.err(error instanceof Error ? error.message : String(error));
      return 1;
    }
    const logger = createLogger({ level: config.logLevel, deviceId: credentials.deviceId, prettyWhenTty: true });
    installCrashHandlers(logger);
    const agent = await Agent.create({ config, credentials, logger });
    await agent.start();
    await new Promise<void>((resolve) => {
      const shutdown = (signal: string): void => {
        logger.info({ signal }, 'shutting down');
        // A second signal while draining forces the exit.
        process.once(signal as NodeJS.Signals, () => process.exit(1));
        agent.stop().then(resolve, (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          resolve();
        });
      };
      process.once('SIGTERM', () => shutdown('SIGTERM'));
      process.once('SIGINT', () => shutdown('SIGINT'));
    });
    logger.flush();
    return 0;
  }

  io.err(`unknown command ${command}\n\n${USAGE}`);
  return 2;
}
