import { Controller, Get, Inject, Query } from '@nestjs/common';
import { z } from 'zod';
import { DATABASE } from '../../platform/tokens.js';
import { RequireRole } from '../../identity/auth/auth.guard.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Database } from '../../platform/database/index.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { ALERT_RULES, RULE_SEVERITY } from './alert-rules.js';
import { ALERT_SETTINGS, type AlertSettings } from './alert.settings.js';

export const alertListQuery = z.object({
  state: z.enum(['open', 'resolved']).optional().describe('open or resolved; default both'),
  rule: z.string().max(64).optional(),
  subject: z.string().max(200).optional().describe('e.g. device:<id>, model:<name>, fleet'),
  severity: z.enum(['info', 'warning', 'critical']).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional().describe('nextCursor of the previous page'),
});

export const alertSchema = z.object({
  id: z.string(),
  rule: z.string(),
  severity: z.enum(['info', 'warning', 'critical']),
  subject: z.string(),
  state: z.enum(['open', 'resolved']),
  value: z.number().nullable(),
  threshold: z.number().nullable(),
  message: z.string().nullable(),
  openedAt: z.date(),
  resolvedAt: z.date().nullable(),
});

export const alertPageSchema = z.object({ items: z.array(alertSchema), nextCursor: z.string().nullable() });

export const alertRulesSchema = z.object({
  windowSeconds: z.number(),
  evaluateEverySeconds: z.number(),
  rules: z.array(z.object({ rule: z.string(), severity: z.string(), threshold: z.number(), unit: z.string() })),
  resolveRatio: z.number(),
  minRequests: z.number(),
});

@Controller('api/v1/alerts')
export class AlertsController {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(ALERT_SETTINGS) private readonly settings: AlertSettings,
  ) {}

  @RequireRole('viewer')
  @Get()
  @ApiDoc({ summary: 'Alerts, newest first (filter by state, rule, subject, severity)', tags: ['alerts'], query: alertListQuery, response: alertPageSchema })
  async list(@Query() query: unknown): Promise<z.infer<typeof alertPageSchema>> {
    const { state, rule, subject, severity, limit, cursor } = parseInput(alertListQuery, query);
    const rows = await this.db.prisma.alert.findMany({
      where: { ...(state ? { state } : {}), ...(rule ? { rule } : {}), ...(subject ? { subject } : {}), ...(severity ? { severity } : {}) },
      take: limit + 1,
      ...(cursor ? { cursor: { id: cursor } } : {}),
      // uuid v7 ids grow with time: id order is creation order, and a stable cursor.
      orderBy: { id: 'desc' },
    });
    return { items: rows.slice(0, limit), nextCursor: rows.length > limit ? (rows[limit]?.id ?? null) : null };
  }

  @RequireRole('viewer')
  @Get('rules')
  @ApiDoc({ summary: 'The alert rules with the thresholds in effect', tags: ['alerts'], response: alertRulesSchema })
  rules(): z.infer<typeof alertRulesSchema> {
    const t = this.settings.thresholds;
    const threshold: Record<(typeof ALERT_RULES)[number], [number, string]> = {
      'device-offline': [t.offlineAfterSeconds, 's'],
      'latency-high': [t.latencyMs, 'ms (p95)'],
      'queue-high': [t.queueLength, 'requests (average)'],
      'memory-high': [t.memoryPercent, '%'],
      'accelerator-memory-high': [t.acceleratorPercent, '%'],
      'error-rate-high': [t.errorRatePercent, '%'],
    };
    return {
      windowSeconds: this.settings.windowSeconds,
      evaluateEverySeconds: this.settings.evaluateEverySeconds,
      rules: ALERT_RULES.map((rule) => ({ rule, severity: RULE_SEVERITY[rule], threshold: threshold[rule][0], unit: threshold[rule][1] })),
      resolveRatio: t.resolveRatio,
      minRequests: t.minRequests,
    };
  }
}
