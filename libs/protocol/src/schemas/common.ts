import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { LIMITS } from '../limits.js';
import { PROTOCOL_VERSION } from '../version.js';

/** [P-1.3] every payload carries `v: 1` */
export const versionField = z.literal(PROTOCOL_VERSION);

/** [P-2.1] device ids appear in topics: no `/`, `+`, `#`, bounded. */
export const DEVICE_ID_PATTERN = /^[a-z0-9][a-z0-9_-]{2,63}$/;
export const DeviceIdSchema = z.string().regex(DEVICE_ID_PATTERN, 'expected a device id matching ^[a-z0-9][a-z0-9_-]{2,63}$');

/** Sender-chosen ids (request, command, session). Printable ASCII without spaces. */
export const IdSchema = z
  .string()
  .min(1)
  .max(LIMITS.idLength)
  .regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces');

/** Model names as used in requests, desired state and telemetry (e.g. `qwen2.5-0.5b-instruct-q4_k_m`). */
export const ModelNameSchema = z
  .string()
  .min(1)
  .max(LIMITS.modelNameLength)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:/@-]*$/, 'expected a model name of letters, digits and . _ : / @ -');

export const Sha256Schema = z.string().regex(/^[a-f0-9]{64}$/, 'expected 64 lowercase hex characters');

/** Milliseconds since the Unix epoch. */
export const TimestampSchema = z.int().min(0);
export const NonNegativeInt = z.int().min(0);
export const ByteCount = z.int().min(0);
export const Percent = z.number().min(0).max(100);

export const shortText = (min = 0) => z.string().min(min).max(LIMITS.shortText);
export const messageText = () => z.string().max(LIMITS.messageLength);

/** Where a model file comes from: http(s), or file: for an agent on the control plane's own machine. [P-3.4] */
export const ModelSourceUrlSchema = z.url({ protocol: /^(https?|file)$/ }).max(LIMITS.urlLength);

export const ErrorCodeSchema = z.enum(ERROR_CODES);

/** Free-form JSON details, bounded by the payload size limit. */
export const DetailsSchema = z.record(z.string().max(LIMITS.shortText), z.unknown());

/** [P-4] Fields every agent outbox entry (telemetry, event, usage) carries. */
export const outboxFields = {
  v: versionField,
  /** per-device, strictly increasing, one sequence space for every outbox kind */
  seq: z.int().min(1),
  /**
   * [P-4.3] set when sent: the seq of the entry the agent holds before this one (or its acknowledged seq), so it
   * holds nothing between prevSeq and seq. Absent means seq - 1. The CP stores an entry only once everything back to
   * prevSeq is stored, so it never skips an entry it could still receive.
   */
  prevSeq: z.int().min(0).optional(),
  /** when the entry was created on the device (epoch ms) */
  ts: TimestampSchema,
};
