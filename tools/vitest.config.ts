import { defineConfig } from 'vitest/config';
import { nodeProject } from '../vitest.shared.mjs';

export default defineConfig(nodeProject('tools'));
