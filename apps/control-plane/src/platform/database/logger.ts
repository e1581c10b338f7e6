/** The part of a logger the database layer uses; a pino logger fits. */
export interface DatabaseLogger {
  info(message: string): void;
  warn(message: string): void;
}

export const silentDatabaseLogger: DatabaseLogger = { info: () => undefined, warn: () => undefined };
