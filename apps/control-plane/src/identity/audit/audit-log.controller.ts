import { Controller, Get, Inject, Query } from '@nestjs/common';
import { z } from 'zod';
import { DATABASE } from '../../platform/tokens.js';
import { RequireRole } from '../auth/auth.guard.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Database } from '../../platform/database/index.js';
import type { Prisma } from '../../generated/prisma/client.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';

export const auditQuery = z.object({
  actor: z.string().max(200).optional().describe('e.g. user:<id>, api-key:<id>, device:<id>, system'),
  action: z.string().max(100).optional().describe('exact action, or a prefix ending in "." (e.g. "device.")'),
  target: z.string().max(200).optional(),
  since: z.iso.datetime({ offset: true }).optional().describe('only events at or after this instant'),
  until: z.iso.datetime({ offset: true }).optional().describe('only events before this instant'),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional().describe('nextCursor of the previous page'),
});

export const auditPageSchema = z.object({
  items: z.array(
    z.object({
      id: z.string(),
      at: z.date(),
      actor: z.string(),
      action: z.string(),
      target: z.string().nullable(),
      details: z.record(z.string(), z.unknown()),
    }),
  ),
  nextCursor: z.string().nullable(),
});

@Controller('api/v1/audit')
export class AuditLogController {
  constructor(@Inject(DATABASE) private readonly db: Database) {}

  /** Admin only: the log names who did what, including user ids and targets across the fleet. */
  @RequireRole('admin')
  @Get()
  @ApiDoc({ summary: 'The audit log, newest first (who changed what, when)', tags: ['audit'], query: auditQuery, response: auditPageSchema })
  async list(@Query() query: unknown): Promise<z.infer<typeof auditPageSchema>> {
    const q = parseInput(auditQuery, query);
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
    const items = rows.slice(0, q.limit).map((r) => ({ ...r, details: (r.details ?? {}) as Record<string, unknown> }));
    return { items, nextCursor: rows.length > q.limit ? (rows[q.limit]?.id ?? null) : null };
  }
}
