import { REDACTED_LOG_PATHS, REDACTION_CENSOR, prettyLogOptions } from '@flotilla/protocol';
import { pino, type DestinationStream, type Logger, type LevelWithSilent } from 'pino';
import { build as prettyStream } from 'pino-pretty';

export interface LoggerOptions {
  name?: string;
  /** where lines go; default standard output */
  destination?: DestinationStream;
  /** readable lines instead of JSON when the output is a terminal (`npm start`) */
  prettyWhenTty?: boolean;
  /** default: whether standard output is a terminal */
  isTty?: boolean;
}

/** JSON lines with ISO 8601 times (readable ones on a terminal with `prettyWhenTty`); secrets become "[redacted]". */
export function createLogger(level: LevelWithSilent, options: LoggerOptions = {}): Logger {
  const pretty = prettyLogOptions({ prettyWhenTty: options.prettyWhenTty, isTty: options.isTty ?? process.stdout.isTTY, destination: options.destination });
  const destination = pretty ? prettyStream(pretty) : options.destination;
  return pino(
    {
      name: options.name ?? 'control-plane',
      level,
      redact: { paths: [...REDACTED_LOG_PATHS], censor: REDACTION_CENSOR },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
