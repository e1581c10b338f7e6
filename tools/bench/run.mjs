// `npm run bench [-- suite ... --flags]`: builds what the suites run (cached by Nx), then runs the named suites
// (tools/src/bench/cli.ts; `npm run bench -- --help` lists them). Tools never import apps: every suite drives the
// built control plane and agent as processes, over HTTP and MQTT.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { root, workspaceEnv } from '../scripts/workspace.mjs';

const args = process.argv.slice(2);
const env = workspaceEnv({ NODE_LLAMA_CPP_GPU: 'false' });
Object.assign(process.env, { NODE_LLAMA_CPP_GPU: 'false', NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true' });
// --help needs the built CLI too: a fresh clone builds first (cached afterwards).
if (!args.includes('--no-build')) {
  console.log('building the tools, the control plane and the agent (cached by Nx)...');
  execFileSync('npx', ['nx', 'run-many', '-t', 'build', '-p', '@flotilla/tools', '@flotilla/control-plane', '@flotilla/device-agent', '--outputStyle=static'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
    env,
  });
}
const { main } = await import(join(root, 'tools/dist/bench/cli.js'));
process.exitCode = await main(args, root);
