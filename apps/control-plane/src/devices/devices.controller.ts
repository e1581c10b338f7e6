import { Controller, Get, Inject, Query } from '@nestjs/common';
import { z } from 'zod';
import { DATABASE } from '../app/tokens.js';
import { RequireRole } from '../auth/auth.guard.js';
import { parseInput } from '../common/parse.js';
import type { Database } from '../database/index.js';

const listQuery = z.object({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional(),
});

@Controller('api/v1/devices')
export class DevicesController {
  constructor(@Inject(DATABASE) private readonly db: Database) {}

  @RequireRole('viewer')
  @Get()
  async list(@Query() query: unknown) {
    const { limit, cursor } = parseInput(listQuery, query);
    const rows = await this.db.prisma.device.findMany({
      take: limit + 1,
      ...(cursor ? { cursor: { id: cursor }, skip: 0 } : {}),
      orderBy: { id: 'asc' },
      select: {
        id: true,
        name: true,
        labels: true,
        hardware: true,
        agentVersion: true,
        status: true,
        lastSeenAt: true,
        createdAt: true,
      },
    });
    const items = rows.slice(0, limit);
    return { items, nextCursor: rows.length > limit ? (rows[limit]?.id ?? null) : null };
  }
}
