#!/usr/bin/env node
// A tiny Prisma generator: writes the schema's DMMF (models, fields, defaults, indexes, relations, enums) to JSON.
// The control plane's schema test compares it with the database the hand-written migrations produce, because the
// schema engine that would generate those migrations cannot be downloaded here. Protocol: JSON-RPC requests, one
// per line, on stdin; responses, one per line, on stderr.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';

const respond = (id, result) => process.stderr.write(`${JSON.stringify({ jsonrpc: '2.0', id, result })}\n`);
const fail = (id, error) =>
  process.stderr.write(`${JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32000, message: String(error?.stack ?? error) } })}\n`);

createInterface({ input: process.stdin, crlfDelay: Infinity }).on('line', (line) => {
  const message = JSON.parse(line);
  try {
    if (message.method === 'getManifest') {
      respond(message.id, { manifest: { prettyName: 'Flotilla schema model (DMMF JSON)', requiresEngines: [] } });
    } else if (message.method === 'generate') {
      const output = message.params.generator.output?.value;
      if (!output) throw new Error('schema-model generator needs an output file');
      mkdirSync(dirname(output), { recursive: true });
      writeFileSync(output, `${JSON.stringify(message.params.dmmf.datamodel, null, 2)}\n`);
      respond(message.id, null);
    }
  } catch (error) {
    fail(message.id, error);
  }
});
