import { z } from 'zod';
import { ConfigError } from '../config/config.js';

export const METRICS_SETTINGS = Symbol('flotilla.metrics-settings');

/**
 * `/metrics` is public by default, like most Prometheus exporters, so a scraper needs no credentials; it shows counts,
 * never names of users or secrets. Set FLOTILLA_METRICS_TOKEN to require `Authorization: Bearer <token>`
 * (Prometheus: `authorization: { credentials: <token> }`).
 */
export interface MetricsSettings {
  token: string | undefined;
}

const schema = z.object({
  FLOTILLA_METRICS_TOKEN: z
    .string()
    .trim()
    .transform((v) => (v === '' ? undefined : v))
    .pipe(z.string().min(16, 'FLOTILLA_METRICS_TOKEN must be at least 16 characters').optional())
    .optional(),
});

export function loadMetricsSettings(env: NodeJS.ProcessEnv = process.env): MetricsSettings {
  const parsed = schema.safeParse(env);
  if (!parsed.success) throw new ConfigError(parsed.error.issues.map((i) => i.message));
  return { token: parsed.data.FLOTILLA_METRICS_TOKEN };
}
