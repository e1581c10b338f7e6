import { pino, type Logger, type LevelWithSilent } from 'pino';

/** Paths pino must never print: credentials in any shape they travel in. */
export const REDACT_PATHS = [
  'password',
  '*.password',
  'adminPassword',
  'apiKey',
  '*.apiKey',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'mqtt.password',
];

export function createLogger(level: LevelWithSilent, name = 'control-plane'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } });
}
