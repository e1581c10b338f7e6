// Writes schema/protocol.schema.json from the built library (plain Node, no TS loader).
// Run: npm run -w @flotilla/protocol generate:schema
import { writeFileSync } from 'node:fs';
import { stdout } from 'node:process';
import { URL, fileURLToPath } from 'node:url';
import { protocolJsonSchemaText } from '../dist/index.js';

const target = fileURLToPath(new URL('../schema/protocol.schema.json', import.meta.url));
writeFileSync(target, protocolJsonSchemaText());
stdout.write(`wrote ${target}\n`);
