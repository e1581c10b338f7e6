import { createLogger, type Logger } from '../../src/logger.js';

/** A real logger that writes nowhere unless FLOTILLA_TEST_LOG is set. */
export function testLogger(): Logger {
  return createLogger({ level: process.env['FLOTILLA_TEST_LOG'] ?? 'silent', deviceId: 'test-device' });
}
