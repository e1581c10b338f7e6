import { z } from 'zod';
import { TOPIC_KINDS, TOPIC_SPECS } from './messages.js';
import { ApiErrorBodySchema } from './rest/errors.js';
import { EnrollRequestSchema, EnrollResponseSchema } from './rest/enroll.js';
import { DEVICES_PREFIX } from './topics.js';

const REST_SCHEMAS = {
  EnrollRequest: EnrollRequestSchema,
  EnrollResponse: EnrollResponseSchema,
  ApiErrorBody: ApiErrorBodySchema,
} as const;

type JsonObject = Record<string, unknown>;

function toJsonSchema(schema: z.ZodType): JsonObject {
  // io 'input': what a receiver accepts (unknown keys are allowed and dropped) [P-1.3]
  const { $schema: _ignored, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input', unrepresentable: 'any' });
  return rest;
}

/**
 * The JSON Schema document of every message (MQTT payloads by topic, REST bodies), committed as
 * `libs/protocol/schema/protocol.schema.json` for review and for non-TypeScript clients.
 */
export function protocolJsonSchema(): JsonObject {
  const defs: JsonObject = {};
  const topicTable: JsonObject = {};
  for (const kind of TOPIC_KINDS) {
    const spec = TOPIC_SPECS[kind];
    defs[spec.schemaName] = toJsonSchema(spec.schema);
    topicTable[kind] = {
      topic: `${DEVICES_PREFIX}/{deviceId}/${spec.path}`,
      direction: spec.direction,
      qos: spec.qos,
      retained: spec.retained,
      outbox: spec.outbox,
      section: spec.section,
      schema: `#/$defs/${spec.schemaName}`,
    };
  }
  for (const [name, schema] of Object.entries(REST_SCHEMAS)) defs[name] = toJsonSchema(schema);
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://flotilla.dev/schema/protocol/v1.json',
    title: 'Flotilla protocol v1',
    description: 'Generated from libs/protocol (zod). Do not edit: run `npm run -w @flotilla/protocol generate:schema`.',
    'x-topics': topicTable,
    $defs: defs,
  };
}

/** The committed file's exact text. */
export function protocolJsonSchemaText(): string {
  return `${JSON.stringify(protocolJsonSchema(), null, 2)}\n`;
}
