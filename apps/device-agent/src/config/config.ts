import { existsSync, readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { parseBindAddress, parseByteSize } from './units.js';

const byteSize = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const bytes = parseByteSize(value);
  if (bytes === undefined) {
    ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(value)} (use e.g. 512MiB, 4GB or a byte count)` });
    return z.NEVER;
  }
  return bytes;
});

const bindAddress = z.string().transform((value, ctx) => {
  const parsed = parseBindAddress(value);
  if (!parsed) {
    ctx.addIssue({ code: 'custom', message: `not a host:port bind address: ${JSON.stringify(value)}` });
    return z.NEVER;
  }
  return parsed;
});

const mqttUrl = z
  .string()
  .refine((value) => /^(mqtts?|wss?|tcp|tls):\/\/[^/]+/.test(value), 'must be an mqtt://, mqtts://, ws:// or wss:// URL');

const existingFile = z.string().refine((path) => existsSync(path), 'file does not exist');

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const agentConfigSchema = z
  .object({
    dataDir: z.string().min(1).default('.flotilla/agent'),
    modelsDir: z.string().min(1).optional(),
    diskQuota: byteSize.default(20 * 1024 ** 3),
    memoryBudget: z.union([z.literal('auto'), byteSize]).default('auto'),
    threads: z.number().int().min(1).max(256).default(1),
    gpu: z.union([z.literal(false), z.literal('auto')]).default(false),
    contextSize: z.number().int().min(256).max(1_048_576).default(2048),
    maxParallelRequests: z.number().int().min(1).max(64).default(2),
    maxQueuedRequests: z.number().int().min(0).max(100_000).default(100),
    idleUnloadSeconds: z.number().int().min(0).default(600),
    labels: z.record(z.string().regex(/^[a-zA-Z0-9_.\-/]{1,63}$/, 'label keys: letters, digits, _ . - /'), z.string().max(253)).default({}),
    localApi: z
      .object({
        enabled: z.boolean().default(true),
        bind: bindAddress.default({ host: '127.0.0.1', port: 8181 }),
      })
      .strict()
      .default({ enabled: true, bind: { host: '127.0.0.1', port: 8181 } }),
    controlPlaneUrl: z.url({ protocol: /^https?$/ }).optional(),
    mqtt: z
      .object({
        url: mqttUrl.optional(),
        tls: z
          .object({
            caFile: existingFile.optional(),
            certFile: existingFile.optional(),
            keyFile: existingFile.optional(),
            rejectUnauthorized: z.boolean().default(true),
          })
          .strict()
          .optional(),
        // 5 s: the broker declares a dead link within 1.5 x keepalive, the product's fast failure detection. [P-1.5]
        keepaliveSeconds: z.number().int().min(1).max(3600).default(5),
        reconnectMinMs: z.number().int().min(10).default(500),
        reconnectMaxMs: z.number().int().min(100).default(30_000),
        /** Failed attempts in a row on one broker URL before the next enrolled URL is tried. */
        failoverAfterAttempts: z.number().int().min(1).max(100).default(3),
        /**
         * [P-3.6] Jobs wait this long for the control plane's answer to the hello (its clock); past it, a control
         * plane that never answers (an older one) gets them run with a budget counted from their arrival.
         */
        helloAnswerTimeoutSeconds: z.number().positive().max(600).default(10),
      })
      .strict()
      .default({ keepaliveSeconds: 5, reconnectMinMs: 500, reconnectMaxMs: 30_000, failoverAfterAttempts: 3, helloAnswerTimeoutSeconds: 10 }),
    telemetryIntervalSeconds: z.number().positive().max(3600).default(5),
    shutdownGraceSeconds: z.number().positive().max(600).default(10),
    outbox: z.object({ maxBytes: byteSize.default(64 * 1024 ** 2) }).strict().default({ maxBytes: 64 * 1024 ** 2 }),
    // [P-3.7] streamed text is sent in chunks of several tokens: one MQTT message per token costs the gateway more
    // than the tokens. The first token is always sent at once.
    streaming: z
      .object({
        flushIntervalMs: z.number().int().min(0).max(10_000).default(20),
        maxTokensPerChunk: z.number().int().min(1).max(1024).default(8),
        /** test seam, never set in production: text deltas are handed to the stream at most one per this many ms */
        testTokenGapMs: z.number().int().min(0).max(10_000).default(0),
      })
      .strict()
      .default({ flushIntervalMs: 20, maxTokensPerChunk: 8, testTokenGapMs: 0 }),
    download: z
      .object({
        maxAttempts: z.number().int().min(1).max(100).default(5),
        retryBaseMs: z.number().int().min(1).default(1000),
      })
      .strict()
      .default({ maxAttempts: 5, retryBaseMs: 1000 }),
    logLevel: z.enum(LOG_LEVELS).default('info'),
  })
  .strict()
  .superRefine((config, ctx) => {
    const tls = config.mqtt.tls;
    if (tls && (tls.certFile === undefined) !== (tls.keyFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['mqtt', 'tls'], message: 'certFile and keyFile must be given together' });
    }
    if (config.mqtt.reconnectMinMs > config.mqtt.reconnectMaxMs) {
      ctx.addIssue({ code: 'custom', path: ['mqtt', 'reconnectMinMs'], message: 'must not exceed reconnectMaxMs' });
    }
  });

type ParsedConfig = z.output<typeof agentConfigSchema>;

/** The validated configuration with derived absolute paths and a concrete memory budget. */
export type AgentConfig = Omit<ParsedConfig, 'modelsDir' | 'memoryBudget'> & {
  modelsDir: string;
  memoryBudget: number;
};

export class ConfigError extends Error {
  constructor(readonly issues: readonly string[]) {
    super(`invalid agent configuration:\n${issues.map((issue) => `  - ${issue}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type EnvKind = 'string' | 'number' | 'boolean' | 'labels' | 'gpu';

/** Every FLOTILLA_AGENT_* variable the agent reads; anything else with that prefix is reported. */
export const ENV_OVERRIDES: Readonly<Record<string, { path: readonly string[]; kind: EnvKind }>> = {
  FLOTILLA_AGENT_DATA_DIR: { path: ['dataDir'], kind: 'string' },
  FLOTILLA_AGENT_MODELS_DIR: { path: ['modelsDir'], kind: 'string' },
  FLOTILLA_AGENT_DISK_QUOTA: { path: ['diskQuota'], kind: 'string' },
  FLOTILLA_AGENT_MEMORY_BUDGET: { path: ['memoryBudget'], kind: 'string' },
  FLOTILLA_AGENT_THREADS: { path: ['threads'], kind: 'number' },
  FLOTILLA_AGENT_GPU: { path: ['gpu'], kind: 'gpu' },
  FLOTILLA_AGENT_CONTEXT_SIZE: { path: ['contextSize'], kind: 'number' },
  FLOTILLA_AGENT_MAX_PARALLEL_REQUESTS: { path: ['maxParallelRequests'], kind: 'number' },
  FLOTILLA_AGENT_MAX_QUEUED_REQUESTS: { path: ['maxQueuedRequests'], kind: 'number' },
  FLOTILLA_AGENT_IDLE_UNLOAD_SECONDS: { path: ['idleUnloadSeconds'], kind: 'number' },
  FLOTILLA_AGENT_LABELS: { path: ['labels'], kind: 'labels' },
  FLOTILLA_AGENT_LOCAL_API_ENABLED: { path: ['localApi', 'enabled'], kind: 'boolean' },
  FLOTILLA_AGENT_LOCAL_API_BIND: { path: ['localApi', 'bind'], kind: 'string' },
  FLOTILLA_AGENT_CONTROL_PLANE_URL: { path: ['controlPlaneUrl'], kind: 'string' },
  FLOTILLA_AGENT_MQTT_URL: { path: ['mqtt', 'url'], kind: 'string' },
  FLOTILLA_AGENT_MQTT_KEEPALIVE_SECONDS: { path: ['mqtt', 'keepaliveSeconds'], kind: 'number' },
  FLOTILLA_AGENT_MQTT_FAILOVER_AFTER_ATTEMPTS: { path: ['mqtt', 'failoverAfterAttempts'], kind: 'number' },
  FLOTILLA_AGENT_MQTT_HELLO_ANSWER_TIMEOUT_SECONDS: { path: ['mqtt', 'helloAnswerTimeoutSeconds'], kind: 'number' },
  FLOTILLA_AGENT_MQTT_TLS_CA_FILE: { path: ['mqtt', 'tls', 'caFile'], kind: 'string' },
  FLOTILLA_AGENT_MQTT_TLS_CERT_FILE: { path: ['mqtt', 'tls', 'certFile'], kind: 'string' },
  FLOTILLA_AGENT_MQTT_TLS_KEY_FILE: { path: ['mqtt', 'tls', 'keyFile'], kind: 'string' },
  FLOTILLA_AGENT_MQTT_TLS_REJECT_UNAUTHORIZED: { path: ['mqtt', 'tls', 'rejectUnauthorized'], kind: 'boolean' },
  FLOTILLA_AGENT_TELEMETRY_INTERVAL_SECONDS: { path: ['telemetryIntervalSeconds'], kind: 'number' },
  FLOTILLA_AGENT_SHUTDOWN_GRACE_SECONDS: { path: ['shutdownGraceSeconds'], kind: 'number' },
  FLOTILLA_AGENT_OUTBOX_MAX_BYTES: { path: ['outbox', 'maxBytes'], kind: 'string' },
  FLOTILLA_AGENT_STREAM_FLUSH_INTERVAL_MS: { path: ['streaming', 'flushIntervalMs'], kind: 'number' },
  FLOTILLA_AGENT_STREAM_MAX_TOKENS_PER_CHUNK: { path: ['streaming', 'maxTokensPerChunk'], kind: 'number' },
  FLOTILLA_AGENT_TEST_TOKEN_GAP_MS: { path: ['streaming', 'testTokenGapMs'], kind: 'number' },
  FLOTILLA_AGENT_LOG_LEVEL: { path: ['logLevel'], kind: 'string' },
};

/** Variables with the prefix that are not overrides (the config file path itself). */
const OTHER_AGENT_VARIABLES = new Set(['FLOTILLA_AGENT_CONFIG']);

function convertEnvValue(raw: string, kind: EnvKind): unknown {
  const value = raw.trim();
  switch (kind) {
    case 'string':
      return value;
    case 'number':
      // Left as a string when unreadable so the schema reports it with the variable name.
      return /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : value;
    case 'boolean':
      if (/^(true|1|yes|on)$/i.test(value)) return true;
      if (/^(false|0|no|off)$/i.test(value)) return false;
      return value;
    case 'gpu':
      return /^(false|0|no|off|none)$/i.test(value) ? false : value;
    case 'labels':
      // "zone=a,role=kiosk"
      return Object.fromEntries(
        value
          .split(',')
          .filter((pair) => pair.trim() !== '')
          .map((pair) => {
            const [key = '', ...rest] = pair.split('=');
            return [key.trim(), rest.join('=').trim()];
          }),
      );
  }
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  const last = path[path.length - 1];
  if (last !== undefined) node[last] = value;
}

export type ConfigSources = { file?: string; env?: NodeJS.ProcessEnv; cwd?: string };

/**
 * Reads the YAML file (optional), applies FLOTILLA_AGENT_* overrides and validates the result.
 * Throws a ConfigError listing every problem at once.
 */
export function loadConfig(sources: ConfigSources = {}): AgentConfig {
  const env = sources.env ?? process.env;
  const cwd = sources.cwd ?? process.cwd();
  const issues: string[] = [];
  let raw: Record<string, unknown> = {};

  const file = sources.file ?? env['FLOTILLA_AGENT_CONFIG'];
  if (file !== undefined && file !== '') {
    try {
      const parsed: unknown = parseYaml(readFileSync(file, 'utf8'));
      if (parsed === null || parsed === undefined) raw = {};
      else if (typeof parsed === 'object' && !Array.isArray(parsed)) raw = parsed as Record<string, unknown>;
      else issues.push(`${file}: the top level must be a mapping`);
    } catch (error) {
      issues.push(`${file}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  const envByPath = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('FLOTILLA_AGENT_') || value === undefined) continue;
    const override = ENV_OVERRIDES[name];
    if (!override) {
      if (!OTHER_AGENT_VARIABLES.has(name)) issues.push(`${name}: unknown variable (known: ${Object.keys(ENV_OVERRIDES).join(', ')})`);
      continue;
    }
    setPath(raw, override.path, convertEnvValue(value, override.kind));
    envByPath.set(override.path.join('.'), name);
  }

  const result = agentConfigSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.map(String).join('.');
      const fromEnv = [...envByPath.entries()].find(([envPath]) => path === envPath || path.startsWith(`${envPath}.`));
      const where = fromEnv ? `${path} (from ${fromEnv[1]})` : path || '(root)';
      issues.push(`${where}: ${issue.message}`);
    }
  }
  if (issues.length > 0 || !result.success) throw new ConfigError(issues);

  const parsed = result.data;
  const dataDir = isAbsolute(parsed.dataDir) ? parsed.dataDir : resolve(cwd, parsed.dataDir);
  const modelsDir = parsed.modelsDir ? resolve(cwd, parsed.modelsDir) : join(dataDir, 'models');
  // "auto" leaves headroom for the OS and the agent itself.
  const memoryBudget = parsed.memoryBudget === 'auto' ? Math.floor(totalmem() * 0.7) : parsed.memoryBudget;
  return { ...parsed, dataDir, modelsDir, memoryBudget };
}
