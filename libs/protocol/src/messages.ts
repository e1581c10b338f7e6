import type { z } from 'zod';
import { DeviceEventSchema } from './schemas/events.js';
import { CommandAckSchema, CommandSchema } from './schemas/commands.js';
import { DesiredStateSchema } from './schemas/desired.js';
import { HelloSchema } from './schemas/hello.js';
import { InferenceCancelSchema, InferenceRequestSchema, InferenceResponseSchema } from './schemas/inference.js';
import { ModelStateReportSchema } from './schemas/model-state.js';
import { OutboxAckSchema } from './schemas/outbox-ack.js';
import { StatusSchema } from './schemas/status.js';
import { TelemetrySchema } from './schemas/telemetry.js';
import { UsageRecordSchema } from './schemas/usage.js';

export type Direction = 'agent-to-cp' | 'cp-to-agent';

export interface TopicSpec<S extends z.ZodType = z.ZodType> {
  /** path below `flotilla/v1/devices/{deviceId}/` */
  path: string;
  direction: Direction;
  qos: 0 | 1;
  retained: boolean;
  /** an agent outbox entry: carries seq, acknowledged through outboxAck [P-4] */
  outbox: boolean;
  schema: S;
  /** section id in docs/protocol.md */
  section: string;
  /** zod schema name, also the `$defs` name in schema/protocol.schema.json */
  schemaName: string;
}

function spec<S extends z.ZodType>(s: TopicSpec<S>): TopicSpec<S> {
  return s;
}

/**
 * [P-2.2] Every topic of the protocol: what flows where, with which QoS and retained flag, and its payload schema.
 * Docs, broker ACLs and the codec all read this table.
 */
export const TOPIC_SPECS = {
  hello: spec({ path: 'hello', direction: 'agent-to-cp', qos: 1, retained: false, outbox: false, schema: HelloSchema, section: 'P-3.1', schemaName: 'Hello' }),
  status: spec({ path: 'status', direction: 'agent-to-cp', qos: 1, retained: true, outbox: false, schema: StatusSchema, section: 'P-3.2', schemaName: 'Status' }),
  telemetry: spec({ path: 'telemetry', direction: 'agent-to-cp', qos: 1, retained: false, outbox: true, schema: TelemetrySchema, section: 'P-3.3', schemaName: 'Telemetry' }),
  desired: spec({ path: 'desired', direction: 'cp-to-agent', qos: 1, retained: true, outbox: false, schema: DesiredStateSchema, section: 'P-3.4', schemaName: 'DesiredState' }),
  modelState: spec({ path: 'models/state', direction: 'agent-to-cp', qos: 1, retained: true, outbox: false, schema: ModelStateReportSchema, section: 'P-3.5', schemaName: 'ModelStateReport' }),
  inferenceRequest: spec({ path: 'inference/requests', direction: 'cp-to-agent', qos: 1, retained: false, outbox: false, schema: InferenceRequestSchema, section: 'P-3.6', schemaName: 'InferenceRequest' }),
  inferenceResponse: spec({ path: 'inference/responses', direction: 'agent-to-cp', qos: 1, retained: false, outbox: false, schema: InferenceResponseSchema, section: 'P-3.7', schemaName: 'InferenceResponse' }),
  inferenceCancel: spec({ path: 'inference/cancel', direction: 'cp-to-agent', qos: 1, retained: false, outbox: false, schema: InferenceCancelSchema, section: 'P-3.8', schemaName: 'InferenceCancel' }),
  command: spec({ path: 'commands', direction: 'cp-to-agent', qos: 1, retained: false, outbox: false, schema: CommandSchema, section: 'P-3.9', schemaName: 'Command' }),
  commandAck: spec({ path: 'commands/ack', direction: 'agent-to-cp', qos: 1, retained: false, outbox: false, schema: CommandAckSchema, section: 'P-3.9', schemaName: 'CommandAck' }),
  event: spec({ path: 'events', direction: 'agent-to-cp', qos: 1, retained: false, outbox: true, schema: DeviceEventSchema, section: 'P-3.10', schemaName: 'DeviceEvent' }),
  usage: spec({ path: 'usage', direction: 'agent-to-cp', qos: 1, retained: false, outbox: true, schema: UsageRecordSchema, section: 'P-3.11', schemaName: 'UsageRecord' }),
  outboxAck: spec({ path: 'outbox/ack', direction: 'cp-to-agent', qos: 1, retained: false, outbox: false, schema: OutboxAckSchema, section: 'P-4.2', schemaName: 'OutboxAck' }),
} as const;

/** A message kind, one per topic. */
export type TopicKind = keyof typeof TOPIC_SPECS;
export const TOPIC_KINDS = Object.keys(TOPIC_SPECS) as TopicKind[];

/** The (validated) payload type of a topic kind. */
export type MessageOf<K extends TopicKind> = z.output<(typeof TOPIC_SPECS)[K]['schema']>;
