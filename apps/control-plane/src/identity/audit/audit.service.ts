import { Inject, Injectable } from '@nestjs/common';
import { DATABASE } from '../../platform/tokens.js';
import type { Database } from '../../platform/database/index.js';
import type { Prisma } from '../../generated/prisma/client.js';

/** Who did something: `user:<id>`, `api-key:<id>`, `device:<id>` or `system`. */
export type Actor = `user:${string}` | `api-key:${string}` | `device:${string}` | 'system';

/** Writes the audit log: every change, with who, what and when. Never put secrets in `details`. */
@Injectable()
export class AuditService {
  constructor(@Inject(DATABASE) private readonly db: Database) {}

  async record(
    actor: Actor,
    action: string,
    target: string | null,
    details: Prisma.InputJsonObject = {},
    tx: Prisma.TransactionClient = this.db.prisma,
  ): Promise<void> {
    await tx.auditEvent.create({ data: { actor, action, target, details } });
  }

  /** Many entries in one statement (a batch of enrollments); the caller keeps them under the bind-parameter limit. */
  async recordMany(rows: Prisma.AuditEventCreateManyInput[], tx: Prisma.TransactionClient = this.db.prisma): Promise<void> {
    if (rows.length > 0) await tx.auditEvent.createMany({ data: rows });
  }
}
