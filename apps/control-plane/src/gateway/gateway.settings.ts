import { z } from 'zod';

export const GATEWAY_SETTINGS = Symbol('flotilla.gateway-settings');

const int = (min: number, max: number, fallback: number) => z.coerce.number().int().min(min).max(max).default(fallback);
const tier = (fallback: 'small' | 'medium' | 'large') => z.enum(['small', 'medium', 'large']).default(fallback);
const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0'])
    .default(fallback ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1');
const optionalString = z
  .string()
  .trim()
  .transform((v) => (v === '' ? undefined : v))
  .optional();

/**
 * `FLOTILLA_GATEWAY_*`: limits and timers of the OpenAI-compatible gateway (defaults from PRODUCT.md §4); a section of
 * the control plane's config (composed by loadConfig).
 */
export const gatewayEnvSchema = z.object({
  FLOTILLA_GATEWAY_DEVICE_CONCURRENCY: int(1, 1000, 10),
  FLOTILLA_GATEWAY_QUEUE_LIMIT: int(0, 100_000, 1000),
  FLOTILLA_GATEWAY_QUEUE_WAIT_MS: int(0, 600_000, 10_000),
  FLOTILLA_GATEWAY_TIMEOUT_MS: int(1000, 3_600_000, 30_000),
  FLOTILLA_GATEWAY_FIRST_TOKEN_TIMEOUT_MS: int(100, 600_000, 10_000),
  FLOTILLA_GATEWAY_MAX_ATTEMPTS: int(1, 10, 3),
  FLOTILLA_GATEWAY_MAX_MESSAGES: int(1, 512, 256),
  FLOTILLA_GATEWAY_STREAM_HEARTBEAT_S: z.coerce.number().min(0.1).max(300).default(15),
  FLOTILLA_GATEWAY_COOLDOWN_FAILURES: int(1, 100, 3),
  FLOTILLA_GATEWAY_COOLDOWN_MS: int(0, 3_600_000, 15_000),
  FLOTILLA_GATEWAY_MEDIUM_PROMPT_CHARS: int(1, 10_000_000, 1500),
  FLOTILLA_GATEWAY_LARGE_PROMPT_CHARS: int(1, 10_000_000, 6000),
  FLOTILLA_GATEWAY_DEFAULT_TIER: tier('small'),
  FLOTILLA_GATEWAY_TOOLS_MIN_TIER: tier('medium'),
  FLOTILLA_GATEWAY_ESCALATE_ON_FAILURE: bool(true),
  FLOTILLA_GATEWAY_STRICT_MIN_TIER: bool(false),
  FLOTILLA_GATEWAY_SESSION_AFFINITY: bool(true),
  FLOTILLA_GATEWAY_CLOUD_URL: optionalString.pipe(z.url().optional()),
  FLOTILLA_GATEWAY_CLOUD_API_KEY: optionalString,
  FLOTILLA_GATEWAY_CLOUD_MODEL: optionalString,
  FLOTILLA_GATEWAY_CLOUD_TIMEOUT_MS: int(100, 600_000, 30_000),
});

export interface CloudSettings {
  baseUrl: string;
  apiKey: string;
  /** the model asked of the endpoint; absent: the client's */
  model: string | undefined;
  timeoutMs: number;
}

/**
 * The environment's gateway settings. Routing fields (tiers, thresholds, concurrency, timeout, attempts, cloud) are
 * the defaults a fleet file's `routing` block replaces: see routing-policy.ts.
 */
export interface GatewaySettings {
  deviceConcurrency: number;
  queueLimit: number;
  queueWaitMs: number;
  timeoutMs: number;
  firstTokenTimeoutMs: number;
  maxAttempts: number;
  maxMessages: number;
  /** a `: heartbeat` comment this often on a streamed answer, so a proxy or client sees the link alive between tokens */
  streamHeartbeatMs: number;
  cooldownFailures: number;
  cooldownMs: number;
  mediumPromptChars: number;
  largePromptChars: number;
  defaultTier: 'small' | 'medium' | 'large';
  toolsMinTier: 'small' | 'medium' | 'large';
  escalateOnFailure: boolean;
  /** no served model at or above the picked tier: 503 instead of the largest served tier below */
  strictMinTier: boolean;
  sessionAffinity: boolean;
  /** OpenAI-compatible endpoint used when no device can serve; absent: no cloud fallback */
  cloud: CloudSettings | undefined;
  /** the environment the config was loaded from, for the variable a fleet file names as its cloud key */
  readEnv: EnvReader;
}

/** Reads one variable of the environment the config was loaded from (a function, so the config never lists secrets). */
export type EnvReader = (name: string) => string | undefined;

/** `readEnv` looks up variables a fleet file names at run time (`cloudFallback.apiKeyEnv`). */
export function gatewaySettingsFromEnv(e: z.infer<typeof gatewayEnvSchema>, readEnv: EnvReader): GatewaySettings {
  return {
    deviceConcurrency: e.FLOTILLA_GATEWAY_DEVICE_CONCURRENCY,
    queueLimit: e.FLOTILLA_GATEWAY_QUEUE_LIMIT,
    queueWaitMs: e.FLOTILLA_GATEWAY_QUEUE_WAIT_MS,
    timeoutMs: e.FLOTILLA_GATEWAY_TIMEOUT_MS,
    firstTokenTimeoutMs: e.FLOTILLA_GATEWAY_FIRST_TOKEN_TIMEOUT_MS,
    maxAttempts: e.FLOTILLA_GATEWAY_MAX_ATTEMPTS,
    maxMessages: e.FLOTILLA_GATEWAY_MAX_MESSAGES,
    streamHeartbeatMs: e.FLOTILLA_GATEWAY_STREAM_HEARTBEAT_S * 1000,
    cooldownFailures: e.FLOTILLA_GATEWAY_COOLDOWN_FAILURES,
    cooldownMs: e.FLOTILLA_GATEWAY_COOLDOWN_MS,
    mediumPromptChars: e.FLOTILLA_GATEWAY_MEDIUM_PROMPT_CHARS,
    largePromptChars: e.FLOTILLA_GATEWAY_LARGE_PROMPT_CHARS,
    defaultTier: e.FLOTILLA_GATEWAY_DEFAULT_TIER,
    toolsMinTier: e.FLOTILLA_GATEWAY_TOOLS_MIN_TIER,
    escalateOnFailure: e.FLOTILLA_GATEWAY_ESCALATE_ON_FAILURE,
    strictMinTier: e.FLOTILLA_GATEWAY_STRICT_MIN_TIER,
    sessionAffinity: e.FLOTILLA_GATEWAY_SESSION_AFFINITY,
    cloud: e.FLOTILLA_GATEWAY_CLOUD_URL
      ? {
          baseUrl: e.FLOTILLA_GATEWAY_CLOUD_URL,
          apiKey: e.FLOTILLA_GATEWAY_CLOUD_API_KEY ?? 'none',
          model: e.FLOTILLA_GATEWAY_CLOUD_MODEL,
          timeoutMs: e.FLOTILLA_GATEWAY_CLOUD_TIMEOUT_MS,
        }
      : undefined,
    readEnv,
  };
}
