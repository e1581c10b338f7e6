import { z } from 'zod';

export const METRICS_SETTINGS = Symbol('flotilla.metrics-settings');

/**
 * `/metrics` is public by default, like most Prometheus exporters, so a scraper needs no credentials; it shows counts,
 * never names of users or secrets. Set FLOTILLA_METRICS_TOKEN to require `Authorization: Bearer <token>`
 * (Prometheus: `authorization: { credentials: <token> }`).
 */
export interface MetricsSettings {
  token: string | undefined;
}

/** A section of the control plane's config (composed by loadConfig). */
export const metricsEnvSchema = z.object({
  FLOTILLA_METRICS_TOKEN: z
    .string()
    .trim()
    .transform((v) => (v === '' ? undefined : v))
    .pipe(z.string().min(16, 'FLOTILLA_METRICS_TOKEN must be at least 16 characters').optional())
    .optional(),
});

export function metricsSettingsFromEnv(e: z.infer<typeof metricsEnvSchema>): MetricsSettings {
  return { token: e.FLOTILLA_METRICS_TOKEN };
}
