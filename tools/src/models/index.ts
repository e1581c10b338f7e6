export * from './presets.js';
export * from './generate.js';
export * from './cache.js';
export * from './gguf.js';
export * from './vocab.js';
export { runModelsCli } from './cli-main.js';
export type { CliIo } from './cli-main.js';
export * from './catalog-entry.js';
