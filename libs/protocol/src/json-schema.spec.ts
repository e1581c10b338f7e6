import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { protocolJsonSchema, protocolJsonSchemaText } from './json-schema.js';
import { TOPIC_KINDS, TOPIC_SPECS } from './messages.js';

const committed = fileURLToPath(new URL('../schema/protocol.schema.json', import.meta.url));

describe('[P-7] JSON Schema artifact', () => {
  it('[P-7] committed schema/protocol.schema.json matches the zod schemas', () => {
    const onDisk = readFileSync(committed, 'utf8');
    const fresh = protocolJsonSchemaText();
    expect(
      onDisk === fresh,
      'libs/protocol/schema/protocol.schema.json is stale: run `npm run -w @flotilla/protocol generate:schema` and commit it',
    ).toBe(true);
  });

  it('[P-7] has one definition per topic and per REST body', () => {
    const defs = protocolJsonSchema()['$defs'] as Record<string, unknown>;
    for (const kind of TOPIC_KINDS) expect(defs[TOPIC_SPECS[kind].schemaName]).toBeTypeOf('object');
    expect(Object.keys(defs)).toEqual(expect.arrayContaining(['EnrollRequest', 'EnrollResponse', 'ApiErrorBody']));
  });
});
