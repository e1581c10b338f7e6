// Bundles the agent into one ESM file, dist/flotilla-agent.mjs. node-llama-cpp stays external: it ships native
// binaries per platform and must be installed next to the bundle (the install script does that).
import { chmod, rm } from 'node:fs/promises';
import process from 'node:process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const here = dirname(fileURLToPath(import.meta.url));

export async function buildAgent(outDir = join(here, 'dist')) {
  const file = join(outDir, 'flotilla-agent.mjs');
  // The bundle is the only artifact: clear whatever an earlier build left.
  await rm(outDir, { recursive: true, force: true });
  await build({
    input: join(here, 'src/main.ts'),
    platform: 'node',
    external: [/^node-llama-cpp(\/.*)?$/, /^node:/],
    // Workspace libraries are bundled from their TypeScript sources.
    resolve: { conditionNames: ['@flotilla/source', 'node', 'import', 'module', 'default'] },
    logLevel: 'warn',
    output: {
      file,
      format: 'esm',
      sourcemap: true,
    },
  });
  await chmod(file, 0o755);
  return file;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = await buildAgent(process.argv[2]);
  process.stdout.write(`built ${file}\n`);
}
