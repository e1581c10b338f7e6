/**
 * What both apps' loggers share: which fields never reach a log line, and when lines are for a person or for a
 * collector. Plain data and one pure function, so this library stays free of pino; each app builds its pino logger
 * from them.
 */

/** Field names that carry credentials in some message, body or config (at the top level or nested). */
const SECRET_FIELDS = ['password', 'adminPassword', 'token', 'secret', 'apiKey', 'authorization', 'credentials'] as const;

/**
 * pino `redact` paths: every secret field at the top level of a log object and two levels down, which covers
 * `mqtt.password` and `req.headers.authorization`. The one list both apps use.
 */
export const REDACTED_LOG_PATHS: readonly string[] = SECRET_FIELDS.flatMap((field) => [field, `*.${field}`, `*.*.${field}`]);

/** What a redacted value is replaced by. */
export const REDACTION_CENSOR = '[redacted]';

/** The pino-pretty options for readable lines; both apps use them, so a terminal shows the same time format for either. */
export interface PrettyLogOptions<D> {
  /** local time, `yyyy-mm-dd HH:MM:ss.l +zzzz` */
  translateTime: string;
  ignore: string;
  /** written synchronously: pino-pretty as a stream, not a worker-thread transport, so nothing is lost at exit */
  sync: true;
  colorize: boolean;
  destination?: D;
}

/**
 * Readable lines for a person at a terminal, JSON lines (ISO 8601 `time`) for everything else: files, pipes,
 * journald, a log collector. Returns the pino-pretty options when lines should be readable, else undefined.
 */
export function prettyLogOptions<D>(options: { prettyWhenTty?: boolean | undefined; isTty?: boolean | undefined; destination?: D | undefined }): PrettyLogOptions<D> | undefined {
  if (options.prettyWhenTty !== true || options.isTty !== true) return undefined;
  return {
    translateTime: 'SYS:standard',
    ignore: 'pid,hostname',
    sync: true,
    // Colour only on the terminal itself, never into a stream someone passed in.
    colorize: options.destination === undefined,
    ...(options.destination === undefined ? {} : { destination: options.destination }),
  };
}
