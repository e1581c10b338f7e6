import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../../platform/tokens.js';
import type { Database } from '../../platform/database/index.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';
import { alertKey, evaluateAlertRules, planAlertChanges, type AlertCondition } from './alert-rules.js';
import { ALERT_SETTINGS, type AlertSettings } from './alert.settings.js';
import { FleetFactsReader } from './fleet-facts.js';

export interface AlertEvaluation {
  at: Date;
  firing: AlertCondition[];
  opened: string[];
  resolved: string[];
}

// pg_advisory_xact_lock(classid, objid): 'FLOT' and 2 = alert evaluation (1 is the migrator's).
const LOCK_CLASS_ID = 0x464c4f54;
const LOCK_OBJECT_ID = 2;
/** A device status change re-evaluates this soon after (several changes at once share one run). */
const STATUS_DEBOUNCE_MS = 250;
/** Alerts opened or resolved per statement (bounded bind parameters). */
const WRITE_CHUNK = 1000;

/**
 * Evaluates the alert rules every `evaluateEverySeconds` and when a device's status changes, and writes the result:
 * one open Alert row per (rule, subject) while the condition holds, resolved when it stops; `alert.changed` after
 * each commit. Runs are serialized in the process and, across replicas, by an advisory lock around the writes.
 */
@Injectable()
export class AlertsService implements OnModuleInit, OnModuleDestroy {
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private queued: Promise<AlertEvaluation> | undefined;
  private stopped = false;
  private offStatus: (() => void) | undefined;
  private readonly evaluations;
  private readonly duration;
  private readonly openGauge;

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    @Inject(ALERT_SETTINGS) readonly settings: AlertSettings,
    private readonly facts: FleetFactsReader,
    private readonly events: FleetEvents,
    metrics: MetricsRegistry,
  ) {
    this.evaluations = metrics.counter({
      name: 'flotilla_alert_evaluations_total',
      help: 'Alert rule evaluations, by result.',
      labelNames: ['result'],
    });
    this.duration = metrics.histogram({ name: 'flotilla_alert_evaluation_duration_seconds', help: 'Time one alert evaluation took.' });
    this.openGauge = metrics.gauge({
      name: 'flotilla_alerts_open',
      help: 'Open alerts by rule and severity (after the latest evaluation).',
      labelNames: ['rule', 'severity'],
    });
  }

  onModuleInit(): void {
    const every = this.settings.evaluateEverySeconds;
    if (every > 0) {
      this.timer = setInterval(() => this.evaluateInBackground(), every * 1000);
      this.timer.unref();
    }
    this.offStatus = this.events.on('device.status', () => this.soon());
  }

  async onModuleDestroy(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.debounce) clearTimeout(this.debounce);
    this.offStatus?.();
    await this.chain.catch(() => undefined);
  }

  /**
   * Evaluates after any run in progress. Calls made while a run waits to start share it: it reads the database only
   * when it starts, so it reflects every caller's moment. `now` (for tests) applies when it starts the run.
   */
  evaluate(now?: Date): Promise<AlertEvaluation> {
    if (this.queued) return this.queued;
    const run = this.chain
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.run(now ?? new Date());
      });
    this.queued = run;
    this.chain = run;
    return run;
  }

  private evaluateInBackground(): void {
    this.evaluateSafely().catch((error: unknown) => this.logger.error({ err: error }, 'alert evaluation failed'));
  }

  private soon(): void {
    if (this.stopped || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.evaluateInBackground();
    }, STATUS_DEBOUNCE_MS);
    this.debounce.unref();
  }

  private async evaluateSafely(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.evaluate();
    } catch (error) {
      if (!this.stopped) this.logger.warn({ err: error }, 'alert evaluation failed');
    }
  }

  private async run(now: Date): Promise<AlertEvaluation> {
    const stop = this.duration.startTimer();
    try {
      const since = new Date(now.getTime() - this.settings.windowSeconds * 1000);
      const [devices, telemetry, traffic] = await Promise.all([this.facts.devices(), this.facts.telemetry(since), this.facts.traffic(since)]);
      const facts = { now, devices, telemetry, traffic };

      const result = await this.db.prisma.$transaction(async (tx) => {
        await tx.$executeRaw`SELECT pg_advisory_xact_lock(${LOCK_CLASS_ID}::int, ${LOCK_OBJECT_ID}::int)`;
        const open = await tx.alert.findMany({
          where: { state: 'open' },
          select: { id: true, rule: true, subject: true },
          orderBy: [{ openedAt: 'asc' }, { id: 'asc' }],
        });
        const firing = evaluateAlertRules(facts, this.settings.thresholds, new Set(open.map((a) => alertKey(a.rule, a.subject))));
        const plan = planAlertChanges(open, firing);
        // One INSERT per chunk, not per alert: a fleet going offline at once opens thousands.
        const opened: { id: string; condition: AlertCondition }[] = [];
        for (let i = 0; i < plan.open.length; i += WRITE_CHUNK) {
          const chunk = plan.open.slice(i, i + WRITE_CHUNK);
          const rows = await tx.alert.createManyAndReturn({
            data: chunk.map((c) => ({ rule: c.rule, subject: c.subject, severity: c.severity, value: c.value, threshold: c.threshold, message: c.message, openedAt: now })),
            select: { id: true, rule: true, subject: true },
          });
          const byKey = new Map(chunk.map((c) => [alertKey(c.rule, c.subject), c]));
          for (const row of rows) {
            const condition = byKey.get(alertKey(row.rule, row.subject));
            if (condition) opened.push({ id: row.id, condition });
          }
        }
        const resolvedRows: { id: string; rule: string; subject: string; severity: AlertCondition['severity'] }[] = [];
        for (let i = 0; i < plan.resolve.length; i += WRITE_CHUNK) {
          const ids = plan.resolve.slice(i, i + WRITE_CHUNK).map((a) => a.id);
          resolvedRows.push(
            ...(await tx.alert.updateManyAndReturn({
              where: { id: { in: ids }, state: 'open' },
              data: { state: 'resolved', resolvedAt: now },
              select: { id: true, rule: true, subject: true, severity: true },
            })),
          );
        }
        return { firing, opened, resolved: resolvedRows };
      });

      for (const { id, condition } of result.opened) {
        this.logger.info({ alertId: id, rule: condition.rule, subject: condition.subject }, `alert opened: ${condition.message}`);
        this.events.emit('alert.changed', { alertId: id, state: 'open', rule: condition.rule, subject: condition.subject, severity: condition.severity });
      }
      for (const row of result.resolved) {
        this.logger.info({ alertId: row.id, rule: row.rule, subject: row.subject }, 'alert resolved');
        this.events.emit('alert.changed', { alertId: row.id, state: 'resolved', rule: row.rule, subject: row.subject, severity: row.severity });
      }
      this.openGauge.reset();
      for (const c of result.firing) this.openGauge.inc({ rule: c.rule, severity: c.severity });
      this.evaluations.inc({ result: 'ok' });
      return { at: now, firing: result.firing, opened: result.opened.map((o) => o.id), resolved: result.resolved.map((r) => r.id) };
    } catch (error) {
      this.evaluations.inc({ result: 'error' });
      throw error;
    } finally {
      stop();
    }
  }
}
