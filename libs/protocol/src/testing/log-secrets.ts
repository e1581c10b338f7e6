import { REDACTED_LOG_PATHS } from '../logging.js';

/** One log object per redacted path, with a distinct secret at that path (`*` replaced by a field name). */
export function logSecretSamples(): { path: string; secret: string; object: Record<string, unknown> }[] {
  return REDACTED_LOG_PATHS.map((path, i) => {
    const secret = `secret-value-${i}-${path.replace(/\W/g, '')}`;
    const keys = path.split('.').map((key) => (key === '*' ? 'nested' : key));
    let value: unknown = secret;
    for (const key of keys.reverse()) value = { [key]: value };
    return { path, secret, object: value as Record<string, unknown> };
  });
}
