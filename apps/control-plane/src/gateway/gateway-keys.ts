import { Inject, Injectable } from '@nestjs/common';
import { DATABASE } from '../platform/tokens.js';
import { SECRET_PREFIX, hashSecret, secretMatches, secretPrefix } from '../identity/auth/secrets.js';
import type { Database } from '../platform/database/index.js';
import { RateLimitService, retryAfterSeconds } from '../platform/rate-limit/rate-limit.service.js';
import { GatewayError } from './openai-format.js';

export interface GatewayKey {
  id: string;
  /** models the key may use; empty: all */
  allowList: string[];
  ratePerMinute: number | null;
}

interface Cached {
  key: GatewayKey | null;
  expiresAt: number | null;
  fetchedAt: number;
}

const CACHE_MS = 10_000;
const LAST_USED_EVERY_MS = 60_000;

/**
 * Gateway API keys (scope `gateway`, Bearer): looked up by hash with a 10 s cache, so a request costs no database
 * round trip and a revoked key stops working within 10 s. Per-key request limits (`rateLimitPerMinute`) through
 * the control plane's one RateLimitService.
 */
@Injectable()
export class GatewayKeys {
  private readonly cache = new Map<string, Cached>();
  private readonly lastUsedWritten = new Map<string, number>();

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    private readonly rateLimits: RateLimitService,
  ) {}

  async authenticate(authorization: string | undefined): Promise<GatewayKey> {
    const bearer = /^Bearer\s+(.+)$/i.exec(authorization ?? '')?.[1]?.trim();
    if (!bearer) throw new GatewayError(401, 'invalid_api_key', 'missing API key: send Authorization: Bearer <key>');
    if (!bearer.startsWith(SECRET_PREFIX.apiKey)) throw new GatewayError(401, 'invalid_api_key', 'incorrect API key provided');
    const hash = hashSecret(bearer);
    const now = Date.now();
    let entry = this.cache.get(hash);
    if (!entry || now - entry.fetchedAt > CACHE_MS) {
      const row = await this.db.prisma.apiKey.findUnique({ where: { prefix: secretPrefix(bearer) } });
      const valid = row && secretMatches(bearer, row.keyHash) && !row.revokedAt && row.scope === 'gateway';
      entry = {
        key: valid ? { id: row.id, allowList: row.modelAllowList, ratePerMinute: row.rateLimitPerMinute } : null,
        expiresAt: row?.expiresAt?.getTime() ?? null,
        fetchedAt: now,
      };
      this.cache.set(hash, entry);
      if (this.cache.size > 10_000) this.cache.delete(this.cache.keys().next().value as string);
    }
    if (!entry.key || (entry.expiresAt !== null && entry.expiresAt < now)) {
      throw new GatewayError(401, 'invalid_api_key', 'incorrect, expired or revoked API key (gateway keys only)');
    }
    this.touch(entry.key.id, now);
    return entry.key;
  }

  /** Takes one request from the key's per-minute limit; 429 with Retry-After when it is spent. */
  async takeRate(key: GatewayKey): Promise<void> {
    if (!key.ratePerMinute) return;
    const capacity = key.ratePerMinute;
    const decision = await this.rateLimits.take('gateway-key', key.id, { capacity, refillPerSecond: capacity / 60 });
    if (!decision.allowed) {
      throw new GatewayError(429, 'rate_limit_exceeded', `rate limit of ${capacity} requests per minute reached for this API key`, {
        'retry-after': String(retryAfterSeconds(decision.retryAfterMs)),
      });
    }
  }

  /** An empty allow-list allows every model. */
  allows(key: GatewayKey, model: string): boolean {
    return key.allowList.length === 0 || key.allowList.includes(model);
  }

  private touch(id: string, now: number): void {
    if (now - (this.lastUsedWritten.get(id) ?? 0) < LAST_USED_EVERY_MS) return;
    this.lastUsedWritten.set(id, now);
    void this.db.prisma.apiKey.update({ where: { id }, data: { lastUsedAt: new Date(now) } }).catch(() => undefined);
  }
}
