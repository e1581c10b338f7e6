import { Injectable } from '@nestjs/common';

/** The agent -> control plane topics the registry ingests. */
export const INGESTED_KINDS = ['hello', 'status', 'telemetry', 'event', 'usage', 'modelState', 'commandAck'] as const;
export type IngestedKind = (typeof INGESTED_KINDS)[number];

export type OutboxKind = 'telemetry' | 'event' | 'usage';

export interface IngestStatsSnapshot {
  /** messages received per topic kind (valid or not) */
  received: Record<IngestedKind, number>;
  /** messages dropped because `decode` rejected them, per topic kind */
  malformed: Record<IngestedKind, number>;
  /** the same, per protocol error code (MALFORMED_JSON, INVALID_MESSAGE...) */
  malformedByCode: Record<string, number>;
  /** outbox entries written to the database, per kind */
  stored: Record<OutboxKind, number>;
  /** outbox entries dropped as duplicates (seq already stored or already buffered) [P-4.3] */
  duplicates: number;
  /** outbox entries dropped because the buffer was full (not acknowledged: the agent resends them) */
  overflowDropped: number;
  /** offline statuses of an older session ignored [P-3.2] */
  staleStatuses: number;
  /** model-state snapshots older than the one held [P-3.5] */
  staleModelStates: number;
  /** handler failures (e.g. database errors) while processing valid messages */
  handlerErrors: number;
  /** outbox acks published [P-4.2] */
  acksPublished: number;
  flushes: number;
  flushFailures: number;
  /** entries waiting in memory for the next flush */
  buffered: number;
  /** duration of the last flush transaction */
  lastFlushMs: number;
  /** the longest time an entry of the last flush waited between receipt and commit (ingest lag) */
  lastFlushLagMs: number;
  /** transactions of batched device writes (hello, status, model state, offline) committed */
  deviceWriteBatches: number;
  /** device writes those transactions carried */
  deviceWrites: number;
  /** retries of a device write batch after a transient database error (P2028, lost connection) */
  deviceWriteRetries: number;
  /** device writes kept for a later try after their retries ran out */
  deviceWritesDeferred: number;
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/** Counters of the MQTT ingest path, read by the metrics endpoint. Plain increments: cheap on the hot path. */
@Injectable()
export class IngestStats {
  readonly received = zeroes(INGESTED_KINDS);
  readonly malformed = zeroes(INGESTED_KINDS);
  readonly malformedByCode: Record<string, number> = {};
  readonly stored = zeroes<OutboxKind>(['telemetry', 'event', 'usage']);
  duplicates = 0;
  overflowDropped = 0;
  staleStatuses = 0;
  staleModelStates = 0;
  handlerErrors = 0;
  acksPublished = 0;
  flushes = 0;
  flushFailures = 0;
  buffered = 0;
  lastFlushMs = 0;
  lastFlushLagMs = 0;
  deviceWriteBatches = 0;
  deviceWrites = 0;
  deviceWriteRetries = 0;
  deviceWritesDeferred = 0;

  countMalformed(kind: IngestedKind, code: string): void {
    this.malformed[kind] += 1;
    this.malformedByCode[code] = (this.malformedByCode[code] ?? 0) + 1;
  }

  /** A copy, safe to serialise. */
  snapshot(): IngestStatsSnapshot {
    return {
      received: { ...this.received },
      malformed: { ...this.malformed },
      malformedByCode: { ...this.malformedByCode },
      stored: { ...this.stored },
      duplicates: this.duplicates,
      overflowDropped: this.overflowDropped,
      staleStatuses: this.staleStatuses,
      staleModelStates: this.staleModelStates,
      handlerErrors: this.handlerErrors,
      acksPublished: this.acksPublished,
      flushes: this.flushes,
      flushFailures: this.flushFailures,
      buffered: this.buffered,
      lastFlushMs: this.lastFlushMs,
      lastFlushLagMs: this.lastFlushLagMs,
      deviceWriteBatches: this.deviceWriteBatches,
      deviceWrites: this.deviceWrites,
      deviceWriteRetries: this.deviceWriteRetries,
      deviceWritesDeferred: this.deviceWritesDeferred,
    };
  }
}
