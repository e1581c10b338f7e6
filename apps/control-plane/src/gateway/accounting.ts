import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { RequestAttemptSchema, type GatewayCounters, type RequestAttempt, type RequestRecordView } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { DATABASE, LOGGER } from '../platform/tokens.js';
import type { Database } from '../platform/database/index.js';
import { FleetEvents } from '../platform/events/fleet-events.js';
import { PendingWrites } from '../platform/events/pending-writes.js';
import type { Tier } from './device-directory.js';
import { GatewayMetrics, deviceLabel, modelLabel } from './gateway-metrics.js';

export type RequestOutcome = 'success' | 'failed' | 'timeout' | 'cancelled' | 'rejected';

export interface RequestRecord {
  requestId: string;
  requestedModel: string;
  model: string | null;
  tier: Tier | null;
  deviceId: string | null;
  cloud: boolean;
  latencyMs: number;
  ttftMs: number | null;
  tokensIn: number;
  tokensOut: number;
  outcome: RequestOutcome;
  errorCode: string | null;
  retries: number;
  stream: boolean;
  apiKeyId: string | null;
  /** every attempt, in order [RequestAttempt] */
  attempts: RequestAttempt[];
}

/** Live counters per model and per device (`GET /api/v1/gateway/stats`). */
export type UsageCounters = GatewayCounters;

const FLUSH_MS = 250;

/**
 * Records every gateway request: rows in `inference_requests` written in batches off the request path, per-model and
 * per-device counters in memory and in `/metrics`, and a `gateway.request` fleet event for dashboards.
 */
@Injectable()
export class GatewayAccounting implements OnModuleDestroy {
  private pending: RequestRecord[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  readonly byModel = new Map<string, UsageCounters>();
  readonly byDevice = new Map<string, UsageCounters>();

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly events: FleetEvents,
    private readonly metrics: GatewayMetrics,
    pendingWrites: PendingWrites,
  ) {
    pendingWrites.register('gateway.requests', () => this.flush());
  }

  record(r: RequestRecord): void {
    this.pending.push(r);
    // Keys as in the metrics: the client's unchecked model name never becomes a key (bounded memory).
    this.count(this.byModel, modelLabel(r), r);
    this.count(this.byDevice, deviceLabel(r), r);
    this.metrics.observe(r);
    this.events.emit('gateway.request', {
      requestId: r.requestId,
      model: r.model,
      requestedModel: r.requestedModel,
      deviceId: r.deviceId,
      cloud: r.cloud,
      outcome: r.outcome,
      latencyMs: r.latencyMs,
      ttftMs: r.ttftMs,
      tokensIn: r.tokensIn,
      tokensOut: r.tokensOut,
      retries: r.retries,
    });
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush().catch((error: unknown) => this.logger.error({ err: error }, 'writing request records failed'));
    }, FLUSH_MS);
  }

  /** Writes what is pending (tests call it to read rows at once). */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const batch = this.pending;
      this.pending = [];
      if (batch.length === 0) return;
      try {
        await this.db.prisma.inferenceRequest.createMany({ data: batch, skipDuplicates: true });
      } catch (error) {
        this.logger.error({ err: error, count: batch.length }, 'could not record gateway requests');
      }
    });
    return this.flushing;
  }

  /** One stored request, with its attempts; undefined when unknown (or not flushed yet). */
  async find(requestId: string): Promise<RequestRecordView | undefined> {
    const row = await this.db.prisma.inferenceRequest.findUnique({ where: { requestId } });
    if (!row) return undefined;
    const attempts = RequestAttemptSchema.array().safeParse(row.attempts);
    return {
      requestId: row.requestId,
      requestedModel: row.requestedModel,
      model: row.model,
      tier: row.tier,
      deviceId: row.deviceId,
      cloud: row.cloud,
      latencyMs: row.latencyMs,
      ttftMs: row.ttftMs,
      tokensIn: row.tokensIn,
      tokensOut: row.tokensOut,
      outcome: row.outcome,
      errorCode: row.errorCode,
      retries: row.retries,
      stream: row.stream,
      createdAt: row.createdAt.toISOString(),
      // rows written before attempts were recorded hold []
      attempts: attempts.success ? attempts.data : [],
    };
  }

  async onModuleDestroy(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private count(map: Map<string, UsageCounters>, key: string, r: RequestRecord): void {
    let c = map.get(key);
    if (!c) {
      c = { requests: 0, successes: 0, failures: 0, retries: 0, tokensIn: 0, tokensOut: 0, latencySumMs: 0 };
      map.set(key, c);
    }
    c.requests++;
    if (r.outcome === 'success') c.successes++;
    else if (r.outcome !== 'cancelled') c.failures++;
    c.retries += r.retries;
    c.tokensIn += r.tokensIn;
    c.tokensOut += r.tokensOut;
    c.latencySumMs += r.latencyMs;
  }
}
