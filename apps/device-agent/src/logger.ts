import { REDACTED_LOG_PATHS, REDACTION_CENSOR, prettyLogOptions } from '@flotilla/protocol';
import { pino, type DestinationStream, type Logger } from 'pino';
import { build as prettyStream } from 'pino-pretty';

export type { Logger } from 'pino';

export type LoggerOptions = {
  level: string;
  deviceId?: string;
  destination?: DestinationStream;
  /** readable lines instead of JSON when the output is a terminal (`flotilla-agent run` by hand) */
  prettyWhenTty?: boolean;
  /** default: whether standard output is a terminal */
  isTty?: boolean;
};

/** A pino logger whose every line carries the device id; JSON with ISO 8601 times; secrets become "[redacted]". */
export function createLogger(options: LoggerOptions): Logger {
  const pretty = prettyLogOptions({ prettyWhenTty: options.prettyWhenTty, isTty: options.isTty ?? process.stdout.isTTY, destination: options.destination });
  const destination = pretty ? prettyStream(pretty) : (options.destination ?? pino.destination({ dest: 1, sync: false }));
  return pino(
    {
      level: options.level,
      base: { deviceId: options.deviceId ?? null },
      redact: { paths: [...REDACTED_LOG_PATHS], censor: REDACTION_CENSOR },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
