import { randomBytes } from 'node:crypto';
import { Inject, Injectable } from '@nestjs/common';
import {
  type CreateEnrollmentTokenRequestSchema,
  type CreatedEnrollmentToken,
  ErrorCode,
  type EnrollRequest,
  type EnrollResponse,
} from '@flotilla/protocol';
import type { z } from 'zod';
import type { Logger } from 'pino';
import { CONFIG, DATABASE, ENDPOINTS, LOGGER, type Endpoints } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { generateSecret, hashSecret, secretPrefix } from '../auth/secrets.js';
import { AppError } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import { chunkRows } from '../../platform/database/bulk.js';
import { retryTransactionStart } from '../../platform/database/retry.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { Prisma } from '../../generated/prisma/client.js';

/** The part of the control plane's config (the CONFIG token) enrollment reads: where devices reach the broker. */
export interface EnrollmentConfig {
  http: { publicUrl: string | undefined };
  mqtt: { host: string };
}

/** Enrollments written in one transaction at most. */
const ENROLLMENT_BATCH_MAX = 500;
/** How long a batch waits for others to join it (also the loop's turn for I/O between batches). */
const ENROLLMENT_GATHER_MS = 5;

interface EnrolledDevice {
  id: string;
  name: string;
  labels: Record<string, string>;
}

interface PendingEnrollment {
  request: EnrollRequest;
  tokenHash: string;
  secretHash: string;
  resolve(device: EnrolledDevice): void;
  reject(error: unknown): void;
}

@Injectable()
export class EnrollmentService {
  private pending: PendingEnrollment[] = [];
  private writing = false;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(CONFIG) private readonly config: EnrollmentConfig,
    @Inject(ENDPOINTS) private readonly endpoints: Endpoints,
    private readonly audit: AuditService,
    private readonly events: FleetEvents,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async createToken(input: z.output<typeof CreateEnrollmentTokenRequestSchema>, actor: Actor, userId: string | null): Promise<CreatedEnrollmentToken> {
    const token = generateSecret('enrollment');
    const expiresAt = new Date(Date.now() + input.ttlSeconds * 1000);
    const row = await this.db.prisma.$transaction(async (tx) => {
      const created = await tx.enrollmentToken.create({
        data: {
          tokenHash: hashSecret(token),
          prefix: secretPrefix(token),
          note: input.note ?? null,
          expiresAt,
          remainingUses: input.uses,
          labels: input.labels,
          createdById: userId,
        },
      });
      await this.audit.record(actor, 'enrollment-token.create', `enrollment-token:${created.id}`, { uses: input.uses, labels: input.labels }, tx);
      return created;
    });
    // The token is shown this once: only its hash is stored.
    return { id: row.id, token, prefix: row.prefix, expiresAt: expiresAt.toISOString(), remainingUses: row.remainingUses, labels: input.labels };
  }

  /**
   * Exchanges a bootstrap token for the device's own credentials. [P-5.1] Enrollments that arrive together are written
   * together (see EnrollmentBatch): a fleet rollout costs one transaction per batch, not one per device.
   */
  enroll(request: EnrollRequest): Promise<EnrollResponse> {
    const secret = generateSecret('device');
    return new Promise<EnrolledDevice>((resolve, reject) => {
      this.pending.push({ request, tokenHash: hashSecret(request.token), secretHash: hashSecret(secret), resolve, reject });
      if (!this.writing) {
        this.writing = true;
        this.drain().catch((error: unknown) => this.logger.error({ err: error }, 'enrollment writer stopped'));
      }
    }).then((device) => {
      this.events.emit('device.enrolled', { deviceId: device.id, name: device.name, labels: device.labels });
      return { deviceId: device.id, mqtt: { username: device.id, password: secret, urls: this.mqttUrls() } };
    });
  }

  /** One batch at a time; the enrollments that arrive meanwhile form the next one. */
  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        // Let the requests that arrived meanwhile reach the queue first: on PGlite a transaction resolves in microtasks
        // only, so chaining batches directly would never give the loop's I/O a turn and every batch would be one.
        await new Promise((resolve) => setTimeout(resolve, ENROLLMENT_GATHER_MS));
        const batch = this.pending.splice(0, ENROLLMENT_BATCH_MAX);
        try {
          const outcomes = await retryTransactionStart(() => this.db.prisma.$transaction((tx) => this.writeBatch(tx, batch)));
          batch.forEach((entry, i) => {
            const outcome = outcomes[i];
            if (outcome) entry.resolve(outcome);
            else entry.reject(new AppError(ErrorCode.ENROLLMENT_TOKEN_INVALID, 'enrollment token is unknown, expired or used up'));
          });
        } catch (error) {
          this.logger.error({ err: error, enrollments: batch.length }, 'enrollment batch failed');
          for (const entry of batch) entry.reject(error);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /**
   * Writes a batch in one transaction: each token is charged once for all its enrollments (never beyond its uses; the
   * ones past them are refused), then devices, credentials and audit entries are inserted in chunks. Returns each
   * entry's device, or null where its token was unknown, expired, revoked or used up.
   */
  private async writeBatch(tx: Prisma.TransactionClient, batch: readonly PendingEnrollment[]): Promise<(EnrolledDevice | null)[]> {
    const now = new Date();
    const granted = new Map<string, { id: string; labels: Record<string, string>; uses: number }>();
    for (const tokenHash of new Set(batch.map((entry) => entry.tokenHash))) {
      const wanted = batch.filter((entry) => entry.tokenHash === tokenHash).length;
      const charged = await chargeToken(tx, tokenHash, wanted, now);
      if (charged) granted.set(tokenHash, charged);
    }
    const outcomes: (EnrolledDevice | null)[] = [];
    const devices: Prisma.DeviceCreateManyInput[] = [];
    const credentials: Prisma.DeviceCredentialCreateManyInput[] = [];
    const audits: Prisma.AuditEventCreateManyInput[] = [];
    for (const entry of batch) {
      const token = granted.get(entry.tokenHash);
      if (!token || token.uses === 0) {
        outcomes.push(null);
        continue;
      }
      token.uses--;
      const id = uuidv7(now.getTime());
      const name = entry.request.name ?? 'device';
      devices.push({ id, name, labels: token.labels, hardware: entry.request.hardware ?? {}, agentVersion: entry.request.agentVersion ?? null, createdAt: now, updatedAt: now });
      credentials.push({ deviceId: id, mqttUsername: id, secretHash: entry.secretHash, createdAt: now });
      audits.push({ actor: `device:${id}`, action: 'device.enroll', target: `device:${id}`, details: { enrollmentToken: token.id, name }, at: now });
      outcomes.push({ id, name, labels: token.labels });
    }
    for (const rows of chunkRows(devices, 8)) await tx.device.createMany({ data: rows });
    for (const rows of chunkRows(credentials, 5)) await tx.deviceCredential.createMany({ data: rows });
    for (const rows of chunkRows(audits, 6)) await this.audit.recordMany(rows, tx);
    return outcomes;
  }

  private mqttUrls(): string[] {
    const publicUrl = this.config.http.publicUrl ? new URL(this.config.http.publicUrl) : undefined;
    const host = publicUrl?.hostname ?? (isWildcard(this.config.mqtt.host) ? '127.0.0.1' : this.config.mqtt.host);
    const wsScheme = publicUrl?.protocol === 'https:' ? 'wss' : 'ws';
    const wsPort = publicUrl?.port || String(this.endpoints.httpPort);
    // Agents try these in order (failing over after repeated connect failures): TLS first when it is on.
    const tls = this.endpoints.mqttTlsPort === undefined ? [] : [`mqtts://${host}:${this.endpoints.mqttTlsPort}`];
    return [...tls, `mqtt://${host}:${this.endpoints.mqttPort}`, `${wsScheme}://${host}:${wsPort}/mqtt`];
  }
}

/**
 * Takes `wanted` uses from a live, unexpired token, or as many as it has left; null when it has none. A compare-and-set
 * on the remaining count, retried if another writer (another process) got there first, so uses are never overspent.
 */
async function chargeToken(
  tx: Prisma.TransactionClient,
  tokenHash: string,
  wanted: number,
  now: Date,
): Promise<{ id: string; labels: Record<string, string>; uses: number } | null> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const live = { tokenHash, revokedAt: null, expiresAt: { gt: now } };
    const token = await tx.enrollmentToken.findFirst({ where: { ...live, remainingUses: { gt: 0 } }, select: { id: true, labels: true, remainingUses: true } });
    if (!token) return null;
    const uses = Math.min(wanted, token.remainingUses);
    const spent = await tx.enrollmentToken.updateMany({
      where: { ...live, id: token.id, remainingUses: token.remainingUses },
      data: { remainingUses: token.remainingUses - uses },
    });
    if (spent.count === 1) return { id: token.id, labels: token.labels as Record<string, string>, uses };
  }
  throw new Error('enrollment token changed under every attempt to charge it');
}

/** A time-ordered UUID (v7), as the schema's `@default(uuid(7))` makes: ids of a batch are made here, before the insert. */
export function uuidv7(now: number): string {
  const bytes = randomBytes(16);
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = ((bytes[6] as number) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] as number) & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}
