import { Inject, Injectable } from '@nestjs/common';
import {
  type CreateEnrollmentTokenRequestSchema,
  type CreatedEnrollmentToken,
  ErrorCode,
  type EnrollRequest,
  type EnrollResponse,
} from '@flotilla/protocol';
import type { z } from 'zod';
import { CONFIG, DATABASE, ENDPOINTS, type Endpoints } from '../../platform/tokens.js';
import { AuditService, type Actor } from '../audit/audit.service.js';
import { generateSecret, hashSecret, secretPrefix } from '../auth/secrets.js';
import { AppError } from '../../platform/common/app-error.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import type { Prisma } from '../../generated/prisma/client.js';

/** The part of the control plane's config (the CONFIG token) enrollment reads: where devices reach the broker. */
export interface EnrollmentConfig {
  http: { publicUrl: string | undefined };
  mqtt: { host: string };
}

@Injectable()
export class EnrollmentService {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(CONFIG) private readonly config: EnrollmentConfig,
    @Inject(ENDPOINTS) private readonly endpoints: Endpoints,
    private readonly audit: AuditService,
    private readonly events: FleetEvents,
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

  /** Exchanges a bootstrap token for the device's own credentials. [P-5.1] */
  async enroll(request: EnrollRequest): Promise<EnrollResponse> {
    const secret = generateSecret('device');
    const device = await this.db.prisma.$transaction(async (tx) => {
      // Decrement only a live, unexpired token with uses left: one statement, so concurrent enrollments cannot overspend it.
      const spent = await tx.enrollmentToken.updateManyAndReturn({
        where: { tokenHash: hashSecret(request.token), revokedAt: null, expiresAt: { gt: new Date() }, remainingUses: { gt: 0 } },
        data: { remainingUses: { decrement: 1 } },
      });
      const token = spent[0];
      if (!token) throw new AppError(ErrorCode.ENROLLMENT_TOKEN_INVALID, 'enrollment token is unknown, expired or used up');
      const device = await tx.device.create({
        data: {
          name: request.name ?? 'device',
          labels: token.labels as Prisma.InputJsonValue,
          hardware: (request.hardware ?? {}),
          agentVersion: request.agentVersion ?? null,
        },
      });
      await tx.deviceCredential.create({
        data: { deviceId: device.id, mqttUsername: device.id, secretHash: hashSecret(secret) },
      });
      await this.audit.record(`device:${device.id}`, 'device.enroll', `device:${device.id}`, { enrollmentToken: token.id, name: device.name }, tx);
      return device;
    });
    this.events.emit('device.enrolled', { deviceId: device.id, name: device.name, labels: device.labels as Record<string, string> });
    const deviceId = device.id;
    return { deviceId, mqtt: { username: deviceId, password: secret, urls: this.mqttUrls() } };
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

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}
