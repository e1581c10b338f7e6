#!/usr/bin/env node
// Runs `prisma generate` without network access. Prisma 7 resolves (and otherwise downloads) the schema engine even
// though generation never runs it; any existing file satisfies the check, so point PRISMA_SCHEMA_ENGINE_BINARY at an
// empty placeholder unless the caller provides a real engine.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const env = { ...process.env, PRISMA_HIDE_UPDATE_MESSAGE: '1', CHECKPOINT_DISABLE: '1' };

if (!env.PRISMA_SCHEMA_ENGINE_BINARY || !existsSync(env.PRISMA_SCHEMA_ENGINE_BINARY)) {
  let dir = join(root, 'node_modules', '.cache', 'flotilla-prisma');
  try {
    mkdirSync(dir, { recursive: true });
  } catch {
    dir = join(tmpdir(), 'flotilla-prisma');
    mkdirSync(dir, { recursive: true });
  }
  const placeholder = join(dir, 'schema-engine-placeholder');
  closeSync(openSync(placeholder, 'a'));
  env.PRISMA_SCHEMA_ENGINE_BINARY = placeholder;
}

const cli = createRequire(import.meta.url).resolve('prisma/build/index.js');
const result = spawnSync(process.execPath, [cli, 'generate', '--config', join(root, 'prisma.config.ts'), ...process.argv.slice(2)], {
  cwd: root,
  env,
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
