import { z } from 'zod';
import { IdSchema, TimestampSchema, shortText, versionField } from './common.js';

export const DeviceStateSchema = z.enum(['online', 'draining', 'offline']);
export type DeviceState = z.infer<typeof DeviceStateSchema>;

/**
 * [P-3.2] Status, retained. `online` after hello; `draining` while draining; `offline` on a clean shutdown and,
 * through the MQTT last will, on a lost connection (`reason: 'connection-lost'`).
 */
export const StatusSchema = z.object({
  v: versionField,
  state: DeviceStateSchema,
  /** the connection this status belongs to; a control plane ignores an offline whose sessionId is not current */
  sessionId: IdSchema,
  /** when the agent created it; a last will carries the time of its connect */
  ts: TimestampSchema,
  reason: z.enum(['startup', 'shutdown', 'connection-lost', 'drain']).optional(),
  agentVersion: shortText().optional(),
});
export type Status = z.infer<typeof StatusSchema>;
