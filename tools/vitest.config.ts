import { defineConfig } from 'vitest/config';
import { nodeProject } from '../vitest.shared.mjs';

// Model tests run llama.cpp on one thread each and one of them measures load+answer time:
// on a 2-core box, files run one after another so they do not skew each other.
export default defineConfig(nodeProject('tools', { fileParallelism: false }));
