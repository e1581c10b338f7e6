import { z } from 'zod';

/** Injection token for RegistrySettings. */
export const REGISTRY_SETTINGS = Symbol('flotilla.registry-settings');

const seconds = (fallback: number, max: number) => z.coerce.number().min(0).max(max).default(fallback);
const days = (fallback: number) => z.coerce.number().positive().max(3650).default(fallback);

/** Registry and ingest variables: a section of the control plane's config (composed by loadConfig). */
export const registryEnvSchema = z.object({
  /** after a control-plane start, devices still marked online that have not come back by then become offline */
  FLOTILLA_DEVICE_RECONNECT_GRACE_S: seconds(30, 3600),
  /** outbox entries are written at least this often... */
  FLOTILLA_INGEST_FLUSH_MS: z.coerce.number().int().min(10).max(60_000).default(1000),
  /** ...or as soon as this many are buffered */
  FLOTILLA_INGEST_FLUSH_ENTRIES: z.coerce.number().int().min(1).max(100_000).default(500),
  /** above this many buffered entries new ones are dropped unacknowledged (the agent resends them later) */
  FLOTILLA_INGEST_MAX_BUFFERED: z.coerce.number().int().min(1).max(10_000_000).default(100_000),
  /** hello, status, model-state and offline writes arriving within this window share one transaction... */
  FLOTILLA_DEVICE_WRITE_WINDOW_MS: z.coerce.number().int().min(1).max(10_000).default(20),
  /** ...of at most this many writes (a larger burst is written as several batches, one after the other) */
  FLOTILLA_DEVICE_WRITE_BATCH: z.coerce.number().int().min(1).max(20_000).default(1000),
  /**
   * TEST SEAM, never set in production: each outbox flush waits this long (after logging "test seam: holding the
   * outbox commit") before its database transaction, so a test can kill the process between the broker's PUBACK
   * and the commit. 0 = off.
   */
  FLOTILLA_TEST_OUTBOX_COMMIT_HOLD_MS: z.coerce.number().int().min(0).max(60_000).default(0),
  /** minute telemetry buckets are kept this long */
  FLOTILLA_TELEMETRY_RETENTION_DAYS: days(7),
  /** hour telemetry buckets are kept this long */
  FLOTILLA_TELEMETRY_HOURLY_RETENTION_DAYS: days(90),
  /** device events and status history are kept this long */
  FLOTILLA_DEVICE_HISTORY_RETENTION_DAYS: days(30),
  /** raw gateway and local request rows (`inference_requests`) are kept this long (once rolled up) */
  FLOTILLA_REQUEST_RETENTION_DAYS: days(7),
  /** minute request rollups are kept this long */
  FLOTILLA_REQUEST_MINUTE_ROLLUP_RETENTION_DAYS: days(7),
  /** hour request rollups are kept this long */
  FLOTILLA_REQUEST_ROLLUP_RETENTION_DAYS: days(90),
  /** finished requests are rolled up into minute and hour buckets this often */
  FLOTILLA_REQUEST_ROLLUP_INTERVAL_S: z.coerce.number().min(1).max(3600).default(60),
  /** how often the retention job runs */
  FLOTILLA_RETENTION_SWEEP_S: z.coerce.number().min(1).max(7 * 24 * 3600).default(3600),
});

export interface RegistrySettings {
  reconnectGraceMs: number;
  flushIntervalMs: number;
  flushEntries: number;
  /** at most this many outbox entries per flush transaction: a larger buffer is written in several */
  flushTransactionEntries: number;
  /** device writes (hello, status, model state, offline) are collected this long into one transaction... */
  deviceWriteWindowMs: number;
  /** ...of at most this many writes */
  deviceWriteBatch: number;
  /** tries of one device write batch on transient errors (P2028, lost connection) before it is kept for later */
  deviceWriteAttempts: number;
  /** pause before a kept batch is tried again */
  deviceWriteDeferMs: number;
  maxBufferedEntries: number;
  minuteRetentionMs: number;
  hourRetentionMs: number;
  historyRetentionMs: number;
  retentionSweepMs: number;
  requestRetentionMs: number;
  requestMinuteRollupRetentionMs: number;
  requestHourRollupRetentionMs: number;
  requestRollupIntervalMs: number;
  /** after a session ends without an offline status, wait this long for a will or a new session before marking offline */
  disconnectSettleMs: number;
  /** [P-4.2] at most one outbox ack per device in this interval */
  ackIntervalMs: number;
  /** test seam (FLOTILLA_TEST_OUTBOX_COMMIT_HOLD_MS): hold each outbox commit this long; 0 = off */
  testCommitHoldMs: number;
}

const DAY_MS = 24 * 3600 * 1000;

export function registrySettingsFromEnv(e: z.infer<typeof registryEnvSchema>): RegistrySettings {
  return {
    reconnectGraceMs: e.FLOTILLA_DEVICE_RECONNECT_GRACE_S * 1000,
    flushIntervalMs: e.FLOTILLA_INGEST_FLUSH_MS,
    flushEntries: e.FLOTILLA_INGEST_FLUSH_ENTRIES,
    flushTransactionEntries: Math.max(e.FLOTILLA_INGEST_FLUSH_ENTRIES, 5000),
    deviceWriteWindowMs: e.FLOTILLA_DEVICE_WRITE_WINDOW_MS,
    deviceWriteBatch: e.FLOTILLA_DEVICE_WRITE_BATCH,
    deviceWriteAttempts: 6,
    deviceWriteDeferMs: 5000,
    maxBufferedEntries: e.FLOTILLA_INGEST_MAX_BUFFERED,
    minuteRetentionMs: e.FLOTILLA_TELEMETRY_RETENTION_DAYS * DAY_MS,
    hourRetentionMs: e.FLOTILLA_TELEMETRY_HOURLY_RETENTION_DAYS * DAY_MS,
    historyRetentionMs: e.FLOTILLA_DEVICE_HISTORY_RETENTION_DAYS * DAY_MS,
    retentionSweepMs: e.FLOTILLA_RETENTION_SWEEP_S * 1000,
    requestRetentionMs: e.FLOTILLA_REQUEST_RETENTION_DAYS * DAY_MS,
    requestMinuteRollupRetentionMs: e.FLOTILLA_REQUEST_MINUTE_ROLLUP_RETENTION_DAYS * DAY_MS,
    requestHourRollupRetentionMs: e.FLOTILLA_REQUEST_ROLLUP_RETENTION_DAYS * DAY_MS,
    requestRollupIntervalMs: e.FLOTILLA_REQUEST_ROLLUP_INTERVAL_S * 1000,
    disconnectSettleMs: 500,
    ackIntervalMs: 200,
    testCommitHoldMs: e.FLOTILLA_TEST_OUTBOX_COMMIT_HOLD_MS,
  };
}
