import { Controller, Get, Inject, Query } from '@nestjs/common';
import { type AuditPage, AuditPageSchema, AuditQuerySchema } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { RequireRole } from '../auth/auth.guard.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Database } from '../../platform/database/index.js';
import type { Prisma } from '../../generated/prisma/client.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';

@Controller('api/v1/audit')
export class AuditLogController {
  constructor(@Inject(DATABASE) private readonly db: Database) {}

  /** Admin only: the log names who did what, including user ids and targets across the fleet. */
  @RequireRole('admin')
  @Get()
  @ApiDoc({ summary: 'The audit log, newest first (who changed what, when)', tags: ['audit'], query: AuditQuerySchema, response: AuditPageSchema })
  async list(@Query() query: unknown): Promise<AuditPage> {
    const q = parseInput(AuditQuerySchema, query);
    const where: Prisma.AuditEventWhereInput = {
      ...(q.actor ? { actor: q.actor } : {}),
      ...(q.action ? (q.action.endsWith('.') ? { action: { startsWith: q.action } } : { action: q.action }) : {}),
      ...(q.target ? { target: q.target } : {}),
      ...(q.since || q.until ? { at: { ...(q.since ? { gte: new Date(q.since) } : {}), ...(q.until ? { lt: new Date(q.until) } : {}) } } : {}),
    };
    const rows = await this.db.prisma.auditEvent.findMany({
      where,
      take: q.limit + 1,
      ...(q.cursor ? { cursor: { id: q.cursor } } : {}),
      // uuid v7: id order is insertion order, a stable cursor even for events in the same millisecond.
      orderBy: { id: 'desc' },
    });
    const items = rows.slice(0, q.limit).map((r) => ({
      id: r.id,
      at: r.at.toISOString(),
      actor: r.actor,
      action: r.action,
      target: r.target,
      // Written only as JSON objects by AuditService.record.
      details: (r.details ?? {}) as Record<string, unknown>,
    }));
    return { items, nextCursor: rows.length > q.limit ? (rows[q.limit]?.id ?? null) : null };
  }
}
