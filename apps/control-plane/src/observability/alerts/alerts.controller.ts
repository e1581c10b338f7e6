import { Controller, Get, Inject, Query } from '@nestjs/common';
import { AlertListQuerySchema, AlertPageSchema, AlertRulesSchema, type AlertPage, type AlertRules } from '@flotilla/protocol';
import { DATABASE } from '../../platform/tokens.js';
import { RequireRole } from '../../identity/auth/auth.guard.js';
import { parseInput } from '../../platform/common/parse.js';
import type { Database } from '../../platform/database/index.js';
import { ApiDoc } from '../../platform/openapi/api-doc.js';
import { ALERT_RULES, RULE_SEVERITY } from './alert-rules.js';
import { ALERT_SETTINGS, type AlertSettings } from './alert.settings.js';

@Controller('api/v1/alerts')
export class AlertsController {
  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(ALERT_SETTINGS) private readonly settings: AlertSettings,
  ) {}

  @RequireRole('viewer')
  @Get()
  @ApiDoc({ summary: 'Alerts, newest first (filter by state, rule, subject, severity)', tags: ['alerts'], query: AlertListQuerySchema, response: AlertPageSchema })
  async list(@Query() query: unknown): Promise<AlertPage> {
    const { state, rule, subject, severity, limit, cursor } = parseInput(AlertListQuerySchema, query);
    const rows = await this.db.prisma.alert.findMany({
      where: { ...(state ? { state } : {}), ...(rule ? { rule } : {}), ...(subject ? { subject } : {}), ...(severity ? { severity } : {}) },
      take: limit + 1,
      ...(cursor ? { cursor: { id: cursor } } : {}),
      // uuid v7 ids grow with time: id order is creation order, and a stable cursor.
      orderBy: { id: 'desc' },
    });
    return {
      items: rows.slice(0, limit).map((a) => ({
        id: a.id,
        rule: a.rule,
        severity: a.severity,
        subject: a.subject,
        state: a.state,
        value: a.value,
        threshold: a.threshold,
        message: a.message,
        openedAt: a.openedAt.toISOString(),
        resolvedAt: a.resolvedAt?.toISOString() ?? null,
      })),
      nextCursor: rows.length > limit ? (rows[limit]?.id ?? null) : null,
    };
  }

  @RequireRole('viewer')
  @Get('rules')
  @ApiDoc({ summary: 'The alert rules with the thresholds in effect', tags: ['alerts'], response: AlertRulesSchema })
  rules(): AlertRules {
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
