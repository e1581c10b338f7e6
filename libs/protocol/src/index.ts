export * from './version.js';
export * from './limits.js';
export * from './errors.js';
export * from './messages.js';
export * from './topics.js';
export * from './codec.js';
export * from './json-schema.js';
export * from './logging.js';
export {
  DEVICE_ID_PATTERN,
  DeviceIdSchema,
  ErrorCodeSchema,
  IdSchema,
  ModelNameSchema,
  Sha256Schema,
} from './schemas/common.js';
export * from './schemas/hello.js';
export * from './schemas/status.js';
export * from './schemas/telemetry.js';
export * from './schemas/desired.js';
export * from './schemas/model-state.js';
export * from './schemas/inference.js';
export * from './schemas/commands.js';
export * from './schemas/events.js';
export * from './schemas/usage.js';
export * from './schemas/outbox-ack.js';
export * from './rest/index.js';
