// Bundles the agent into one ESM file, dist/flotilla-agent.mjs. node-llama-cpp stays external: it ships native
// binaries per platform and must be installed next to the bundle (the install script does that).
import { chmod, rm } from 'node:fs/promises';
import { realpathSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import process from 'node:process';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Extra export conditions. The bundler adds `import` for import statements and `require` for require() calls by
 * itself; naming either here would apply it to both kinds, so a CommonJS `require("ws")` would get ws's ESM
 * wrapper (whose default export has no createWebSocketStream). Workspace libraries are bundled from their sources.
 */
export const CONDITION_NAMES = ['@flotilla/source', 'node', 'default'];

/**
 * Fails the build when a require() in a dependency resolves to another file than Node's own require() would load
 * from the same place: the bundle must run the code the sources run, whatever the packages' exports maps say.
 */
export function requireResolvesLikeNode() {
  const mismatches = [];
  return {
    name: 'flotilla:require-resolves-like-node',
    async resolveId(source, importer, options) {
      if (options.kind !== 'require-call' || !importer || !isAbsolute(importer)) return null;
      if (source.startsWith('node:') || builtinModules.includes(source)) return null;
      const resolved = await this.resolve(source, importer, { kind: options.kind, skipSelf: true });
      if (!resolved || resolved.external) return resolved;
      let expected;
      try {
        expected = realpathSync(createRequire(importer).resolve(source));
      } catch {
        return resolved; // an optional dependency Node cannot load either (ws's bufferutil, for one)
      }
      if (realpathSync(resolved.id) !== expected) mismatches.push(`require(${JSON.stringify(source)}) in ${importer}: bundled ${resolved.id}, Node loads ${expected}`);
      return resolved;
    },
    buildEnd() {
      if (mismatches.length > 0) this.error(`the bundle would load other files than Node:\n  ${mismatches.join('\n  ')}`);
    },
  };
}

export async function buildAgent(outDir = join(here, 'dist')) {
  const file = join(outDir, 'flotilla-agent.mjs');
  // The bundle is the only artifact: clear whatever an earlier build left.
  await rm(outDir, { recursive: true, force: true });
  await build({
    input: join(here, 'src/main.ts'),
    platform: 'node',
    external: [/^node-llama-cpp(\/.*)?$/, /^node:/],
    resolve: { conditionNames: CONDITION_NAMES },
    plugins: [requireResolvesLikeNode()],
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
