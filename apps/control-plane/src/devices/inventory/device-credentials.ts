import { timingSafeEqual } from 'node:crypto';
import { type DynamicModule, Module } from '@nestjs/common';
import type { Logger } from 'pino';
import { hashSecret } from '../../identity/auth/secrets.js';
import type { Database } from '../../platform/database/index.js';

/** A live credential as the broker checks it: the device it belongs to and the sha256 of its secret. */
interface CachedCredential {
  deviceId: string;
  secretHash: Buffer;
}

interface Waiter {
  resolve(credential: CachedCredential | undefined): void;
  reject(error: unknown): void;
}

/** Usernames looked up in one query when CONNECTs of uncached devices arrive together. */
const LOOKUP_CHUNK = 1000;
/** How long the first miss waits for others to join its query. */
const LOOKUP_GATHER_MS = 10;
/** Rows per page when the cache is filled at start. */
const WARM_PAGE = 5000;

/**
 * Device credentials held in memory so that an MQTT CONNECT costs no database round trip (issue 11, cause 6). Device
 * secrets are 256-bit random and stored as sha256 hashes, so a cached hash is exactly as safe as the row it came from.
 *
 * - Filled at start (`warm`, one paged query) and on a miss: misses that arrive together are looked up in one query,
 *   one query at a time, so a storm of unknown or newly enrolled devices costs a few queries, not one per CONNECT.
 * - Full, not bounded: ~200 bytes per device (10,000 devices ~2 MB). Unknown usernames are not cached (a device may
 *   enroll a moment later), so an attacker's random names cannot grow it.
 * - Revocation (`revokeDevice`) drops the device's entries and remembers the device as revoked, so a lookup that was
 *   already reading the old row when the revocation committed cannot put it back or let it in.
 * - One process only: a revocation made by another control-plane process would not reach this cache. Running several
 *   control planes on one database is the scale-out issue's; it must then broadcast revocations (or share the cache).
 */
export class DeviceCredentialCache {
  private readonly byUsername = new Map<string, CachedCredential>();
  private readonly usernamesByDevice = new Map<string, Set<string>>();
  private readonly revokedDevices = new Set<string>();
  private waiting = new Map<string, Waiter[]>();
  private loading = false;

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
  ) {}

  get size(): number {
    return this.byUsername.size;
  }

  /** Loads every live credential (keyset-paged); returns how many. */
  async warm(): Promise<number> {
    const startedAt = Date.now();
    let cursor: string | undefined;
    let loaded = 0;
    for (;;) {
      const rows = await this.db.prisma.deviceCredential.findMany({
        where: { revokedAt: null, device: { status: { not: 'revoked' } } },
        select: { id: true, deviceId: true, mqttUsername: true, secretHash: true },
        orderBy: { id: 'asc' },
        take: WARM_PAGE,
        ...(cursor ? { cursor: { id: cursor }, skip: 1 } : {}),
      });
      for (const row of rows) this.remember(row.mqttUsername, row.deviceId, row.secretHash);
      loaded += rows.length;
      if (rows.length < WARM_PAGE) break;
      cursor = rows[rows.length - 1]?.id;
    }
    this.logger.info({ credentials: loaded, ms: Date.now() - startedAt }, 'device credentials cached');
    return loaded;
  }

  /** The device a username and secret belong to, or null (unknown, wrong secret, revoked). */
  async verify(username: string, secret: Buffer): Promise<{ deviceId: string } | null> {
    const credential = this.byUsername.get(username) ?? (await this.lookup(username));
    if (!credential || this.revokedDevices.has(credential.deviceId)) return null;
    const actual = Buffer.from(hashSecret(secret.toString('utf8')), 'hex');
    if (actual.length !== credential.secretHash.length || !timingSafeEqual(actual, credential.secretHash)) return null;
    return { deviceId: credential.deviceId };
  }

  /** After the revocation committed: the device's credentials are refused from now on, by every later CONNECT. */
  revokeDevice(deviceId: string): void {
    this.revokedDevices.add(deviceId);
    this.forgetDevice(deviceId);
  }

  /** Drops what is cached for a device (e.g. its credential was replaced): the next CONNECT reads the database. */
  forgetDevice(deviceId: string): void {
    for (const username of this.usernamesByDevice.get(deviceId) ?? []) this.byUsername.delete(username);
    this.usernamesByDevice.delete(deviceId);
  }

  private remember(username: string, deviceId: string, secretHash: string): void {
    if (this.revokedDevices.has(deviceId)) return;
    this.byUsername.set(username, { deviceId, secretHash: Buffer.from(secretHash, 'hex') });
    let usernames = this.usernamesByDevice.get(deviceId);
    if (!usernames) this.usernamesByDevice.set(deviceId, (usernames = new Set()));
    usernames.add(username);
  }

  private lookup(username: string): Promise<CachedCredential | undefined> {
    return new Promise((resolve, reject) => {
      const waiters = this.waiting.get(username);
      if (waiters) waiters.push({ resolve, reject });
      else this.waiting.set(username, [{ resolve, reject }]);
      // Gather the misses of a few milliseconds into one query: a storm's CONNECTs are accepted one or two per turn of
      // the event loop (and on PGlite each query holds the loop for milliseconds), so a per-turn batch would be 1.
      if (!this.loading) {
        this.loading = true;
        setTimeout(() => {
          this.drain().catch((error: unknown) => this.logger.error({ err: error }, 'device credential lookups stopped'));
        }, LOOKUP_GATHER_MS);
      }
    });
  }

  /** One query at a time until no miss is waiting. */
  private async drain(): Promise<void> {
    let first = true;
    try {
      while (this.waiting.size > 0) {
        if (!first) await new Promise((resolve) => setTimeout(resolve, LOOKUP_GATHER_MS));
        first = false;
        const batch = this.waiting;
        this.waiting = new Map();
        const usernames = [...batch.keys()];
        for (let i = 0; i < usernames.length; i += LOOKUP_CHUNK) {
          const chunk = usernames.slice(i, i + LOOKUP_CHUNK);
          try {
            const rows = await this.db.prisma.deviceCredential.findMany({
              where: { mqttUsername: { in: chunk } },
              select: { deviceId: true, mqttUsername: true, secretHash: true, revokedAt: true, device: { select: { status: true } } },
            });
            const found = new Map(rows.map((row) => [row.mqttUsername, row]));
            for (const username of chunk) {
              const row = found.get(username);
              let credential: CachedCredential | undefined;
              if (row && !row.revokedAt && row.device.status !== 'revoked') {
                this.remember(username, row.deviceId, row.secretHash);
                credential = this.byUsername.get(username);
              } else if (row?.device.status === 'revoked') {
                this.revokedDevices.add(row.deviceId);
              }
              for (const waiter of batch.get(username) ?? []) waiter.resolve(credential);
            }
          } catch (error) {
            this.logger.error({ err: error, usernames: chunk.length }, 'device credential lookup failed');
            for (const username of chunk) for (const waiter of batch.get(username) ?? []) waiter.reject(error);
          }
        }
      }
    } finally {
      this.loading = false;
    }
  }
}

/** Hands the one cache (built before Nest, shared with the broker's authentication) to the services that revoke. */
@Module({})
export class DeviceCredentialsModule {
  static register(cache: DeviceCredentialCache): DynamicModule {
    return { module: DeviceCredentialsModule, global: true, providers: [{ provide: DeviceCredentialCache, useValue: cache }], exports: [DeviceCredentialCache] };
  }
}
