import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { RoutingPolicyView } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../platform/tokens.js';
import type { Database } from '../platform/database/index.js';
import { FleetEvents } from '../platform/events/fleet-events.js';
import { RoutingSchema, type Routing } from '../models/fleet-file/fleet-file.js';
import { Balancer } from './balancer.js';
import { CloudFallback } from './cloud-fallback.js';
import { TIERS, type Tier } from './device-directory.js';
import { GATEWAY_SETTINGS, type CloudSettings, type GatewaySettings } from './gateway.settings.js';

/**
 * What the gateway routes by, per request: the fleet file's `routing` block when one was applied (see
 * docs/fleet-file.md), else the `FLOTILLA_GATEWAY_*` settings. Settings the block has no field for (queue, first-token
 * deadline, cooldown, message limit, the character thresholds of tiers without `maxPromptTokens`) always come from
 * the environment.
 */
export interface RoutingPolicy {
  source: 'fleet-file' | 'environment';
  /** the tier `model: auto` starts from */
  defaultTier: Tier;
  /** models serving each tier; an empty list: the catalog models of that tier not listed under another tier */
  tierModels: Record<Tier, string[]>;
  /** false: `auto` is the default tier (no classifier) */
  autoEnabled: boolean;
  /** requests with tools or structured output start at this tier at least */
  toolsMinTier: Tier;
  /** prompts estimated longer (tokens) skip the tier; a tier without a limit uses the character thresholds */
  maxPromptTokens: Partial<Record<Tier, number>>;
  mediumPromptChars: number;
  largePromptChars: number;
  /** every replica of a tier's model failed before any token: try the next larger tier */
  escalateOnFailure: boolean;
  /**
   * When no model at or above the tier the rules pick is served: false, the largest served tier below answers (and
   * `x-flotilla-route` says so); true, the request fails (cloud fallback, else 503)
   */
  strictMinTier: boolean;
  sessionAffinity: boolean;
  deviceConcurrency: number;
  timeoutMs: number;
  maxAttempts: number;
  cloud: CloudSettings | undefined;
}

/** The policy as served by `GET /api/v1/gateway/routing` (RoutingPolicyViewSchema): the cloud key is never shown. */
export type { RoutingPolicyView };

export function policyFromSettings(s: GatewaySettings): RoutingPolicy {
  return {
    source: 'environment',
    defaultTier: s.defaultTier,
    tierModels: { small: [], medium: [], large: [] },
    autoEnabled: true,
    toolsMinTier: s.toolsMinTier,
    maxPromptTokens: {},
    mediumPromptChars: s.mediumPromptChars,
    largePromptChars: s.largePromptChars,
    escalateOnFailure: s.escalateOnFailure,
    strictMinTier: s.strictMinTier,
    sessionAffinity: s.sessionAffinity,
    deviceConcurrency: s.deviceConcurrency,
    timeoutMs: s.timeoutMs,
    maxAttempts: s.maxAttempts,
    cloud: s.cloud,
  };
}

/**
 * The fleet file's block over the environment's settings; the block decides every field it has. The cloud key is read
 * from the variable the block names, in the environment the config was loaded from (`s.readEnv`).
 */
export function policyFromRouting(r: Routing, s: GatewaySettings): RoutingPolicy {
  const c = r.cloudFallback;
  const maxPromptTokens: Partial<Record<Tier, number>> = {};
  for (const tier of TIERS) {
    const limit = r.auto.maxPromptTokens[tier];
    if (limit !== undefined) maxPromptTokens[tier] = limit;
  }
  return {
    source: 'fleet-file',
    defaultTier: r.defaultTier,
    tierModels: { small: [...r.tiers.small], medium: [...r.tiers.medium], large: [...r.tiers.large] },
    autoEnabled: r.auto.enabled,
    toolsMinTier: r.auto.toolsMinTier,
    maxPromptTokens,
    mediumPromptChars: s.mediumPromptChars,
    largePromptChars: s.largePromptChars,
    escalateOnFailure: r.auto.escalateOnFailure,
    strictMinTier: r.auto.strictMinTier,
    sessionAffinity: r.sessionAffinity,
    deviceConcurrency: r.maxConcurrentPerDevice,
    timeoutMs: r.requestTimeoutMs,
    maxAttempts: r.maxRetries + 1,
    cloud:
      c.enabled && c.baseUrl && c.model
        ? { baseUrl: c.baseUrl, model: c.model, apiKey: (c.apiKeyEnv ? s.readEnv(c.apiKeyEnv) : undefined) ?? 'none', timeoutMs: c.timeoutMs }
        : undefined,
  };
}

export function policyView(p: RoutingPolicy): RoutingPolicyView {
  const { cloud, ...rest } = p;
  if (!cloud) return { ...rest, cloud: null };
  const { apiKey, ...shown } = cloud;
  return { ...rest, cloud: { ...shown, apiKeySet: apiKey !== 'none' } };
}

// The fleet service stores the block under this key of `fleet_settings` (src/fleet/fleet.service.ts).
const ROUTING_KEY = 'routing';
/** Other control-plane replicas may apply a fleet file: re-read now and then, not only on `routing.changed`. */
const RELOAD_MS = 30_000;

/**
 * The routing policy in effect. Read from `fleet_settings` at start, again on every `routing.changed` event and every
 * 30 s; a stored block that no longer parses is ignored (logged) and the environment's settings apply.
 */
@Injectable()
export class GatewayRouting implements OnModuleInit, OnModuleDestroy {
  private policy: RoutingPolicy;
  private cloudClient: { key: string; client: CloudFallback } | undefined;
  private stop: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private loading: Promise<RoutingPolicy> | undefined;
  private again = false;

  constructor(
    @Inject(GATEWAY_SETTINGS) private readonly settings: GatewaySettings,
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly events: FleetEvents,
    private readonly balancer: Balancer,
  ) {
    this.policy = policyFromSettings(settings);
  }

  async onModuleInit(): Promise<void> {
    this.stop = this.events.on('routing.changed', () => this.reloadInBackground());
    this.timer = setInterval(() => this.reloadInBackground(), RELOAD_MS);
    this.timer.unref();
    await this.reload();
  }

  onModuleDestroy(): void {
    this.stop?.();
    clearInterval(this.timer);
  }

  get current(): RoutingPolicy {
    return this.policy;
  }

  /** The cloud fallback client for the policy in effect (one per endpoint configuration). */
  cloud(): CloudFallback | undefined {
    const c = this.policy.cloud;
    if (!c) return undefined;
    const key = JSON.stringify(c);
    if (this.cloudClient?.key !== key) this.cloudClient = { key, client: new CloudFallback(c) };
    return this.cloudClient.client;
  }

  /** Reads the stored block again (one read at a time; a change during a read triggers one more). */
  reload(): Promise<RoutingPolicy> {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = this.read()
      .then((policy) => {
        this.apply(policy);
        return policy;
      })
      .catch((error: unknown) => {
        this.logger.warn({ err: error }, 'gateway: could not read the routing settings; keeping the current ones');
        return this.policy;
      })
      .finally(() => {
        this.loading = undefined;
        if (this.again) {
          this.again = false;
          this.reloadInBackground();
        }
      });
    return this.loading;
  }

  private reloadInBackground(): void {
    // reload() catches its own failures; this only satisfies the promise's owner.
    this.reload().catch((error: unknown) => this.logger.warn({ err: error }, 'gateway: routing reload failed'));
  }

  private async read(): Promise<RoutingPolicy> {
    const row = await this.db.prisma.fleetSetting.findUnique({ where: { key: ROUTING_KEY } });
    if (!row) return policyFromSettings(this.settings);
    const parsed = RoutingSchema.safeParse(row.value);
    if (!parsed.success) {
      this.logger.warn({ issues: parsed.error.issues.length }, 'gateway: the stored routing block does not parse; using the FLOTILLA_GATEWAY_* settings');
      return policyFromSettings(this.settings);
    }
    return policyFromRouting(parsed.data, this.settings);
  }

  private apply(policy: RoutingPolicy): void {
    const changed = JSON.stringify(policy) !== JSON.stringify(this.policy);
    this.policy = policy;
    this.balancer.setDeviceConcurrency(policy.deviceConcurrency);
    if (changed) this.logger.info({ source: policy.source, defaultTier: policy.defaultTier, cloud: policy.cloud !== undefined }, 'gateway: routing settings changed');
  }
}
