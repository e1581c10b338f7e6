import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger } from 'pino';

/** Paths whose values never reach a log line. */
export const REDACTED_PATHS = [
  'password',
  'token',
  'secret',
  'authorization',
  '*.password',
  '*.token',
  '*.secret',
  '*.authorization',
  '*.*.password',
  '*.*.token',
  'headers.authorization',
  'req.headers.authorization',
  'credentials',
  '*.credentials',
];

export type LoggerOptions = {
  level: string;
  deviceId?: string;
  destination?: DestinationStream;
};

/** A pino logger whose every line carries the device id; secrets are replaced by "[redacted]". */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level,
      base: { deviceId: options.deviceId ?? null },
      redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
