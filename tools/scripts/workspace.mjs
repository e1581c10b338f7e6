// What the root scripts (npm start, npm test, npm run bench) share: the repository root and the environment Nx and
// node-llama-cpp run best in here (no Nx cloud or daemon, no plugin workers, no binary downloads).
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** `process.env` plus the workspace defaults; values the caller already set win where they may. */
export function workspaceEnv(extra = {}) {
  return {
    ...process.env,
    NX_NO_CLOUD: 'true',
    NX_ISOLATE_PLUGINS: 'false',
    NX_DAEMON: process.env.NX_DAEMON ?? 'false',
    NX_TUI: 'false',
    NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true',
    ...extra,
  };
}
