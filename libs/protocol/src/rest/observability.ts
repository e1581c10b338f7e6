import { z } from 'zod';

// REST contract of the observability routes: alerts, fleet health, recommendations, usage, the event stream, /metrics.

/** An ISO 8601 timestamp as it travels in JSON (the control plane sends `Date`s as `toISOString()`). */
const IsoTimestamp = z.iso.datetime();

export const AlertSeveritySchema = z.enum(['info', 'warning', 'critical']);
export type AlertSeverity = z.infer<typeof AlertSeveritySchema>;
export const AlertStateSchema = z.enum(['open', 'resolved']);
export type AlertState = z.infer<typeof AlertStateSchema>;
/** The rules the control plane evaluates (docs/observability.md). */
export const ALERT_RULE_IDS = ['device-offline', 'latency-high', 'queue-high', 'memory-high', 'accelerator-memory-high', 'error-rate-high'] as const;
export const AlertRuleIdSchema = z.enum(ALERT_RULE_IDS);
export type AlertRuleId = z.infer<typeof AlertRuleIdSchema>;

/** `GET /api/v1/alerts` query. */
export const AlertListQuerySchema = z.object({
  state: AlertStateSchema.optional().describe('open or resolved; default both'),
  rule: z.string().max(64).optional(),
  subject: z.string().max(200).optional().describe('e.g. device:<id>, model:<name>, fleet'),
  severity: AlertSeveritySchema.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().max(64).optional().describe('nextCursor of the previous page'),
});
export type AlertListQuery = z.infer<typeof AlertListQuerySchema>;

/** One alert. `rule` is a string, not the rule enum: rows of rules since retired stay readable. */
export const AlertSchema = z.object({
  id: z.string(),
  rule: z.string(),
  severity: AlertSeveritySchema,
  subject: z.string(),
  state: AlertStateSchema,
  value: z.number().nullable(),
  threshold: z.number().nullable(),
  message: z.string().nullable(),
  openedAt: IsoTimestamp,
  resolvedAt: IsoTimestamp.nullable(),
});
export type AlertView = z.infer<typeof AlertSchema>;

/** `GET /api/v1/alerts` answer: newest first. */
export const AlertPageSchema = z.object({ items: z.array(AlertSchema), nextCursor: z.string().nullable() });
export type AlertPage = z.infer<typeof AlertPageSchema>;

/** `GET /api/v1/alerts/rules` answer: the rules with the thresholds in effect. */
export const AlertRulesSchema = z.object({
  windowSeconds: z.number(),
  evaluateEverySeconds: z.number(),
  rules: z.array(z.object({ rule: AlertRuleIdSchema, severity: AlertSeveritySchema, threshold: z.number(), unit: z.string() })),
  resolveRatio: z.number(),
  minRequests: z.number(),
});
export type AlertRules = z.infer<typeof AlertRulesSchema>;

export const FleetHealthStatusSchema = z.enum(['healthy', 'degraded', 'unhealthy']);
export type FleetHealthStatus = z.infer<typeof FleetHealthStatusSchema>;

export const FleetHealthReasonSchema = z.object({
  rule: z.enum(['devices-offline', 'deployment-unavailable', 'deployment-below-desired', 'fleet-errors', 'alerts-open']),
  status: FleetHealthStatusSchema.exclude(['healthy']),
  message: z.string(),
});
export type FleetHealthReason = z.infer<typeof FleetHealthReasonSchema>;

/** `GET /api/v1/fleet-health` answer. */
export const FleetHealthSchema = z.object({
  status: FleetHealthStatusSchema,
  reasons: z.array(FleetHealthReasonSchema),
  devices: z.object({
    total: z.int().min(0),
    online: z.int().min(0).describe('online and back on this control plane since it started'),
    reconnecting: z.int().min(0).describe('stored online/draining by an earlier control-plane process, not back yet (no hello, no live session)'),
    offline: z.int().min(0),
    draining: z.int().min(0),
    revoked: z.int().min(0),
  }),
  deployments: z.object({ total: z.int().min(0), belowDesired: z.int().min(0), unavailable: z.int().min(0) }),
  alerts: z.object({ open: z.int().min(0), critical: z.int().min(0), warning: z.int().min(0) }),
  evaluatedAt: IsoTimestamp,
});
export type FleetHealthView = z.infer<typeof FleetHealthSchema>;

export const RecommendationSchema = z.object({
  kind: z.enum(['scale-out', 'scale-up', 'scale-down']),
  subject: z.string().describe('deployment:<name> or device:<id>'),
  deploymentId: z.string().optional(),
  deviceId: z.string().optional(),
  currentReplicas: z.int().min(0).optional(),
  suggestedReplicas: z.int().min(0).optional(),
  reason: z.string(),
  metrics: z.record(z.string(), z.number()),
});
export type Recommendation = z.infer<typeof RecommendationSchema>;

/** `GET /api/v1/recommendations` answer. */
export const RecommendationsSchema = z.object({
  windowSeconds: z.number(),
  generatedAt: IsoTimestamp,
  recommendations: z.array(RecommendationSchema),
});
export type Recommendations = z.infer<typeof RecommendationsSchema>;

const WINDOW_UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** The longest `?window=` of `/api/v1/usage`. */
export const USAGE_MAX_WINDOW_MS = 30 * WINDOW_UNIT_MS.d;

/** Milliseconds of a usage window such as `15m`, `1h`, `7d` (already validated by {@link UsageQuerySchema}). */
export function usageWindowMs(window: string): number {
  const unit = window.slice(-1) as keyof typeof WINDOW_UNIT_MS;
  return Number(window.slice(0, -1)) * WINDOW_UNIT_MS[unit];
}

/** `GET /api/v1/usage` query: `?window=` a duration such as `15m`, `1h`, `24h`, `7d` (at most 30 days); default one hour. */
export const UsageQuerySchema = z.object({
  window: z
    .string()
    .regex(/^[1-9][0-9]{0,6}[smhd]$/, 'expected a duration such as 15m, 1h, 24h or 7d')
    .refine((w) => usageWindowMs(w) <= USAGE_MAX_WINDOW_MS, 'at most 30d')
    .default('1h'),
});
export type UsageQuery = z.infer<typeof UsageQuerySchema>;

export const UsageCountersSchema = z.object({
  requests: z.int().min(0),
  successes: z.int().min(0),
  /** `failed` and `timeout` outcomes (client cancellations and 4xx rejections are not failures) */
  failures: z.int().min(0),
  timeouts: z.int().min(0),
  cancelled: z.int().min(0),
  rejected: z.int().min(0),
  retries: z.int().min(0),
  tokensIn: z.int().min(0),
  tokensOut: z.int().min(0),
  /** over successful requests */
  latencyAvgMs: z.number().nullable(),
  latencyP50Ms: z.number().nullable(),
  latencyP95Ms: z.number().nullable(),
  ttftP50Ms: z.number().nullable(),
  /** requests an agent served on its local endpoint (recorded by the agent, not through the gateway) */
  local: z.int().min(0),
});
export type UsageCounters = z.infer<typeof UsageCountersSchema>;

/** `GET /api/v1/usage` answer. */
export const UsageSchema = z.object({
  window: z.string(),
  since: IsoTimestamp,
  until: IsoTimestamp,
  totals: UsageCountersSchema,
  byModel: z.array(UsageCountersSchema.extend({ model: z.string().describe('the model that answered; `none` when none did') })),
  byDevice: z.array(
    UsageCountersSchema.extend({
      deviceId: z.string().describe('a device id, `cloud` (fallback endpoint) or `none` (no device answered)'),
      deviceName: z.string().nullable(),
    }),
  ),
});
export type Usage = z.infer<typeof UsageSchema>;

/** Event types a dashboard may ask for (`?types=`); the filter accepts any name so new types need no change. */
export const STREAM_EVENT_TYPES_EXAMPLE = ['device.enrolled', 'device.status', 'model-state.changed', 'placement.changed', 'alert.changed', 'fleet.health'] as const;

/** `GET /api/v1/events/stream` query. */
export const EventStreamQuerySchema = z.object({
  types: z
    .string()
    .max(1000)
    .regex(/^[a-z0-9.,_ -]*$/, 'expected comma-separated event types')
    .optional()
    .describe(`Comma-separated event types to receive (default: all), e.g. ${STREAM_EVENT_TYPES_EXAMPLE.join(',')}`),
  token: z.string().max(512).optional().describe('Session token or API key, for EventSource which cannot send headers'),
});
export type EventStreamQuery = z.infer<typeof EventStreamQuerySchema>;

const Outcome = z.enum(['success', 'failed', 'timeout', 'cancelled', 'rejected']);
const DeviceStatusName = z.enum(['online', 'offline', 'draining', 'revoked']);
const Action = z.enum(['created', 'updated', 'deleted']);

/**
 * The `data` of each fleet event type, as the control plane emits it in process and the event stream forwards it.
 * Payloads are small and already persisted: a dashboard reloads details over REST.
 */
export const FLEET_EVENT_DATA = {
  'device.enrolled': z.object({ deviceId: z.string(), name: z.string(), labels: z.record(z.string(), z.string()) }),
  'device.status': z.object({ deviceId: z.string(), status: DeviceStatusName, previous: z.string().nullable(), at: IsoTimestamp }),
  'device.updated': z.object({ deviceId: z.string(), fields: z.array(z.string()) }),
  'device.telemetry': z.object({ deviceId: z.string(), at: IsoTimestamp }),
  /** an event a device reported (outbox kind `event`, stored before this fires) */
  'device.event': z.object({
    deviceId: z.string(),
    seq: z.int().min(0),
    level: z.enum(['debug', 'info', 'warn', 'error']),
    code: z.string(),
    message: z.string(),
    at: IsoTimestamp,
  }),
  /** a device acknowledged a command [P-3.9] */
  'command.ack': z.object({
    deviceId: z.string(),
    commandId: z.string(),
    status: z.enum(['accepted', 'completed', 'rejected', 'failed']),
    code: z.string().nullable(),
    message: z.string().nullable(),
  }),
  'model-state.changed': z.object({ deviceId: z.string(), modelId: z.string(), state: z.string(), at: IsoTimestamp }),
  /** `name` as it is now, or was when deleted */
  'catalog.changed': z.object({ modelId: z.string(), name: z.string(), action: Action }),
  'deployment.changed': z.object({ deploymentId: z.string(), action: Action }),
  /** the fleet file's routing block changed */
  'routing.changed': z.object({ at: IsoTimestamp }),
  'placement.changed': z.object({ deviceId: z.string(), desiredVersion: z.int().min(0) }),
  /** the gateway finished a request (recorded in inference_requests) */
  'gateway.request': z.object({
    requestId: z.string(),
    model: z.string().nullable(),
    requestedModel: z.string(),
    deviceId: z.string().nullable(),
    cloud: z.boolean(),
    outcome: Outcome,
    latencyMs: z.number(),
    ttftMs: z.number().nullable(),
    tokensIn: z.int().min(0),
    tokensOut: z.int().min(0),
    retries: z.int().min(0),
  }),
  'alert.changed': z.object({ alertId: z.string(), state: AlertStateSchema, rule: z.string(), subject: z.string(), severity: AlertSeveritySchema }),
  /** fleet health moved between healthy / degraded / unhealthy */
  'fleet.health': z.object({ status: FleetHealthStatusSchema, previous: FleetHealthStatusSchema.nullable(), at: IsoTimestamp }),
} as const;
export type FleetEventName = keyof typeof FLEET_EVENT_DATA;
export type FleetEventMap = { [K in FleetEventName]: z.infer<(typeof FLEET_EVENT_DATA)[K]> };

const streamEvent = <K extends FleetEventName>(type: K) =>
  z.object({ id: z.string().describe('<boot>.<seq>'), type: z.literal(type), data: FLEET_EVENT_DATA[type], at: IsoTimestamp });

/** The `data:` of one fleet event on `GET /api/v1/events/stream` (its SSE `event:` is the `type`). */
export const StreamEventSchema = z.discriminatedUnion('type', [
  streamEvent('device.enrolled'),
  streamEvent('device.status'),
  streamEvent('device.updated'),
  streamEvent('device.telemetry'),
  streamEvent('device.event'),
  streamEvent('command.ack'),
  streamEvent('model-state.changed'),
  streamEvent('catalog.changed'),
  streamEvent('deployment.changed'),
  streamEvent('routing.changed'),
  streamEvent('placement.changed'),
  streamEvent('gateway.request'),
  streamEvent('alert.changed'),
  streamEvent('fleet.health'),
]);
export type StreamEvent = z.infer<typeof StreamEventSchema>;

/** Control events of the stream besides fleet events (SSE `event:` name -> `data:`). */
export const StreamControlEventSchemas = {
  /** first event of every stream */
  ready: z.object({ at: IsoTimestamp, lastEventId: z.string().nullable() }),
  heartbeat: z.object({ at: IsoTimestamp }),
  /** the Last-Event-ID is from another process or too old: reload state over REST */
  resync: z.object({ reason: z.string() }),
  /** the credential expired or was revoked: the stream ends */
  unauthorized: z.object({ reason: z.string() }),
} as const;

/** `GET /metrics`: Prometheus text format 0.0.4. */
export const MetricsTextSchema = z.string().describe('Prometheus text exposition format 0.0.4');
