import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { z } from 'zod';
import { alertEnvSchema, alertSettingsFromEnv, type AlertSettings } from '../observability/alerts/alert.settings.js';
import { gatewayEnvSchema, gatewaySettingsFromEnv, type GatewaySettings } from '../gateway/gateway.settings.js';
import { metricsEnvSchema, metricsSettingsFromEnv, type MetricsSettings } from '../observability/metrics/metrics.settings.js';
import { rateLimitEnvSchema, rateLimitSettingsFromEnv, type RateLimitSettings } from '../platform/rate-limit/rate-limit.settings.js';
import { registryEnvSchema, registrySettingsFromEnv, type RegistrySettings } from '../devices/ingest/device-ingest.settings.js';
import { schedulerEnvSchema, schedulerSettingsFromEnv, type SchedulerSettings } from '../models/placement/placement.settings.js';
import { streamEnvSchema, streamSettingsFromEnv, type StreamSettings } from '../observability/stream/stream.settings.js';

const port = (name: string, fallback: number) =>
  z.coerce
    .number({ error: `${name} must be a port number` })
    .int(`${name} must be an integer`)
    .min(0, `${name} must be between 0 and 65535`)
    .max(65535, `${name} must be between 0 and 65535`)
    .default(fallback);

const optionalString = z
  .string()
  .trim()
  .transform((value) => (value === '' ? undefined : value))
  .optional();

/** proxy-addr's named ranges, accepted in FLOTILLA_TRUST_PROXY beside addresses and CIDRs */
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function isProxyAddress(entry: string): boolean {
  if (PROXY_RANGE_NAMES.has(entry)) return true;
  const [address = '', prefix, ...rest] = entry.split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^[0-9]{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

/** unset or `false`: off; `true`: trust every hop; else a comma-separated list of proxy addresses/CIDRs */
const trustProxy = optionalString.pipe(
  z
    .string()
    .optional()
    .transform((value, ctx): boolean | string[] | undefined => {
      if (value === undefined) return undefined;
      if (value === 'false') return false;
      if (value === 'true') return true;
      const entries = value.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '');
      const bad = entries.filter((entry) => !isProxyAddress(entry));
      if (entries.length === 0 || bad.length > 0) {
        ctx.addIssue({ code: 'custom', message: `FLOTILLA_TRUST_PROXY must be true, false or a list of addresses/CIDRs (not ${bad.join(', ') || 'empty'})` });
        return z.NEVER;
      }
      return entries;
    }),
);

/** PostgreSQL connections the control plane opens at most (PGlite has one, whatever this says). */
export const DEFAULT_DATABASE_POOL_SIZE = 10;

/**
 * Devices the embedded PGlite holds on the reference 2-core box (docs/benchmarks.md, fleet suite with --pglite); past
 * it the control plane warns at start and when the fleet grows past it, and recommends PostgreSQL.
 */
export const DEFAULT_PGLITE_DEVICE_LIMIT = 5000;

/** The core variables: data, ports, database, logging, first admin. */
export const coreEnvSchema = z.object({
  FLOTILLA_DATA_DIR: z.string().trim().min(1).default('./.flotilla'),
  FLOTILLA_HTTP_HOST: z.string().trim().min(1).default('0.0.0.0'),
  FLOTILLA_HTTP_PORT: port('FLOTILLA_HTTP_PORT', 8080),
  FLOTILLA_TRUST_PROXY: trustProxy,
  FLOTILLA_MQTT_HOST: z.string().trim().min(1).default('0.0.0.0'),
  FLOTILLA_MQTT_PORT: port('FLOTILLA_MQTT_PORT', 1883),
  FLOTILLA_PUBLIC_URL: optionalString.pipe(z.url({ error: 'FLOTILLA_PUBLIC_URL must be a URL' }).optional()),
  DATABASE_URL: optionalString.pipe(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'DATABASE_URL must be a postgres:// or postgresql:// URL')
      .optional(),
  ),
  FLOTILLA_DATABASE_POOL_SIZE: z.coerce
    .number({ error: 'FLOTILLA_DATABASE_POOL_SIZE must be a whole number of connections between 1 and 1000' })
    .int({ error: 'FLOTILLA_DATABASE_POOL_SIZE must be a whole number of connections between 1 and 1000' })
    .min(1, { error: 'FLOTILLA_DATABASE_POOL_SIZE must be a whole number of connections between 1 and 1000' })
    .max(1000, { error: 'FLOTILLA_DATABASE_POOL_SIZE must be a whole number of connections between 1 and 1000' })
    .default(DEFAULT_DATABASE_POOL_SIZE),
  FLOTILLA_MIGRATIONS_DIR: optionalString,
  FLOTILLA_DASHBOARD_DIR: optionalString,
  FLOTILLA_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  FLOTILLA_CPU_PROFILE_DIR: optionalString,
  FLOTILLA_PGLITE_DEVICE_LIMIT: z.coerce
    .number({ error: 'FLOTILLA_PGLITE_DEVICE_LIMIT must be a whole number of devices (0 turns the warning off)' })
    .int({ error: 'FLOTILLA_PGLITE_DEVICE_LIMIT must be a whole number of devices (0 turns the warning off)' })
    .min(0, { error: 'FLOTILLA_PGLITE_DEVICE_LIMIT must be a whole number of devices (0 turns the warning off)' })
    .default(DEFAULT_PGLITE_DEVICE_LIMIT),
  FLOTILLA_ADMIN_EMAIL: z.email({ error: 'FLOTILLA_ADMIN_EMAIL must be an e-mail address' }).default('admin@flotilla.local'),
  FLOTILLA_MQTT_KEEPALIVE_LIMIT_S: z.coerce.number().int().min(0).max(3600).default(120),
  FLOTILLA_MQTT_MAX_MESSAGE_BYTES: z.coerce.number().int().min(1024).max(256 * 1024 * 1024).default(1024 * 1024),
  FLOTILLA_MQTT_MAX_UNAUTHENTICATED_PER_ADDRESS: z.coerce
    .number({ error: 'FLOTILLA_MQTT_MAX_UNAUTHENTICATED_PER_ADDRESS must be a whole number (0 turns the cap off)' })
    .int({ error: 'FLOTILLA_MQTT_MAX_UNAUTHENTICATED_PER_ADDRESS must be a whole number (0 turns the cap off)' })
    .min(0, { error: 'FLOTILLA_MQTT_MAX_UNAUTHENTICATED_PER_ADDRESS must be a whole number (0 turns the cap off)' })
    .max(100_000)
    .default(64),
  FLOTILLA_MQTT_TLS_PORT: port('FLOTILLA_MQTT_TLS_PORT', 8883),
  FLOTILLA_MQTT_TLS_CERT_FILE: optionalString,
  FLOTILLA_MQTT_TLS_KEY_FILE: optionalString,
  FLOTILLA_MQTT_TLS_CA_FILE: optionalString,
});

/**
 * Every section's variables. Each module keeps its section's schema beside it; this is the one place they are
 * composed and the one place the environment is validated (docs/configuration.md lists them all).
 */
export const CONFIG_SECTIONS = {
  core: coreEnvSchema,
  registry: registryEnvSchema,
  gateway: gatewayEnvSchema,
  metrics: metricsEnvSchema,
  scheduler: schedulerEnvSchema,
  alerts: alertEnvSchema,
  stream: streamEnvSchema,
  rateLimit: rateLimitEnvSchema,
} as const;

/** Every environment variable the control plane reads, validated once at boot. */
export const controlPlaneEnvSchema = z.object({
  ...coreEnvSchema.shape,
  ...registryEnvSchema.shape,
  ...gatewayEnvSchema.shape,
  ...metricsEnvSchema.shape,
  ...schedulerEnvSchema.shape,
  ...alertEnvSchema.shape,
  ...streamEnvSchema.shape,
  ...rateLimitEnvSchema.shape,
});

export interface ControlPlaneConfig {
  dataDir: string;
  http: {
    host: string;
    port: number;
    /** FLOTILLA_HTTP_PORT was set: the port is used as is; else it may move on first start (see ports.ts) */
    portSetByVariable: boolean;
    publicUrl: string | undefined;
    /** Fastify's `trustProxy`: false, true (every hop) or the proxies' addresses/CIDRs; `request.ip` then comes from X-Forwarded-For */
    trustProxy: boolean | string[];
  };
  mqtt: {
    host: string;
    port: number;
    /** FLOTILLA_MQTT_PORT was set */
    portSetByVariable: boolean;
    keepaliveLimitSeconds: number;
    maxMessageBytes: number;
    /** connections from one source address that may be open without having authenticated yet; 0: no cap */
    maxUnauthenticatedPerAddress: number;
    /** MQTT over TLS beside plain TCP, when a certificate and key are configured */
    tls: { port: number; portSetByVariable: boolean; certFile: string; keyFile: string; caFile: string | undefined } | undefined;
  };
  database: {
    url: string | undefined;
    migrationsDir: string | undefined;
    /** PostgreSQL pool size (FLOTILLA_DATABASE_POOL_SIZE); unused by the embedded PGlite */
    poolSize: number;
    /** enrolled or connected devices past which the embedded PGlite is too small (a warning); 0: no warning */
    pgliteDeviceLimit: number;
  };
  /** SIGUSR2 toggles a CPU profile written here (FLOTILLA_CPU_PROFILE_DIR); unset: no profiler */
  cpuProfileDir: string | undefined;
  dashboardDir: string | undefined;
  logLevel: z.infer<typeof coreEnvSchema>['FLOTILLA_LOG_LEVEL'];
  adminEmail: string;
  registry: RegistrySettings;
  gateway: GatewaySettings;
  metrics: MetricsSettings;
  scheduler: SchedulerSettings;
  alerts: AlertSettings;
  stream: StreamSettings;
  rateLimit: RateLimitSettings;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Parses the environment, every section at once, and throws one ConfigError listing every problem. `main.ts` passes
 * `process.env`; tests pass a plain object. Nothing else in the app reads the environment.
 */
export function loadConfig(env: NodeJS.ProcessEnv): ControlPlaneConfig {
  const parsed = controlPlaneEnvSchema.safeParse(env);
  const problems = tlsProblems(env);
  if (!parsed.success || problems.length > 0) {
    throw new ConfigError([
      ...(parsed.success
        ? []
        : parsed.error.issues.map((issue) => {
            const key = issue.path.join('.');
            return issue.message.includes(key) ? issue.message : `${key}: ${issue.message}`;
          })),
      ...problems,
    ]);
  }
  const e = parsed.data;
  const setByVariable = (name: string) => (env[name]?.trim() ?? '') !== '';
  return {
    dataDir: resolve(e.FLOTILLA_DATA_DIR),
    http: {
      host: e.FLOTILLA_HTTP_HOST,
      port: e.FLOTILLA_HTTP_PORT,
      portSetByVariable: setByVariable('FLOTILLA_HTTP_PORT'),
      publicUrl: e.FLOTILLA_PUBLIC_URL, trustProxy: e.FLOTILLA_TRUST_PROXY ?? false },
    mqtt: {
      host: e.FLOTILLA_MQTT_HOST,
      port: e.FLOTILLA_MQTT_PORT,
      portSetByVariable: setByVariable('FLOTILLA_MQTT_PORT'),
      keepaliveLimitSeconds: e.FLOTILLA_MQTT_KEEPALIVE_LIMIT_S,
      maxMessageBytes: e.FLOTILLA_MQTT_MAX_MESSAGE_BYTES,
      maxUnauthenticatedPerAddress: e.FLOTILLA_MQTT_MAX_UNAUTHENTICATED_PER_ADDRESS,
      tls:
        e.FLOTILLA_MQTT_TLS_CERT_FILE && e.FLOTILLA_MQTT_TLS_KEY_FILE
          ? {
              port: e.FLOTILLA_MQTT_TLS_PORT,
              portSetByVariable: setByVariable('FLOTILLA_MQTT_TLS_PORT'),
              certFile: e.FLOTILLA_MQTT_TLS_CERT_FILE, keyFile: e.FLOTILLA_MQTT_TLS_KEY_FILE, caFile: e.FLOTILLA_MQTT_TLS_CA_FILE }
          : undefined,
    },
    database: {
      url: e.DATABASE_URL,
      migrationsDir: e.FLOTILLA_MIGRATIONS_DIR,
      poolSize: e.FLOTILLA_DATABASE_POOL_SIZE,
      pgliteDeviceLimit: e.FLOTILLA_PGLITE_DEVICE_LIMIT,
    },
    cpuProfileDir: e.FLOTILLA_CPU_PROFILE_DIR === undefined ? undefined : resolve(e.FLOTILLA_CPU_PROFILE_DIR),
    dashboardDir: e.FLOTILLA_DASHBOARD_DIR,
    logLevel: e.FLOTILLA_LOG_LEVEL,
    adminEmail: e.FLOTILLA_ADMIN_EMAIL,
    registry: registrySettingsFromEnv(e),
    gateway: gatewaySettingsFromEnv(e, (name) => env[name]),
    metrics: metricsSettingsFromEnv(e),
    scheduler: schedulerSettingsFromEnv(e),
    alerts: alertSettingsFromEnv(e),
    stream: streamSettingsFromEnv(e),
    rateLimit: rateLimitSettingsFromEnv(e),
  };
}

/** TLS needs a certificate and a key together, and every named file must exist. */
function tlsProblems(env: NodeJS.ProcessEnv): string[] {
  const value = (name: string) => env[name]?.trim() || undefined;
  const cert = value('FLOTILLA_MQTT_TLS_CERT_FILE');
  const key = value('FLOTILLA_MQTT_TLS_KEY_FILE');
  const problems: string[] = [];
  if (Boolean(cert) !== Boolean(key)) {
    problems.push('FLOTILLA_MQTT_TLS_CERT_FILE and FLOTILLA_MQTT_TLS_KEY_FILE must be set together');
  }
  for (const name of ['FLOTILLA_MQTT_TLS_CERT_FILE', 'FLOTILLA_MQTT_TLS_KEY_FILE', 'FLOTILLA_MQTT_TLS_CA_FILE']) {
    const file = value(name);
    if (file && !existsSync(file)) problems.push(`${name}: no such file ${file}`);
  }
  return problems;
}
