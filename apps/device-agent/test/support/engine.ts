import { ensureModel } from '@flotilla/tools/models';
import { LlamaEngine } from '../../src/runtime/llama-engine.js';
import { testLogger } from './silent-logger.js';

export type TinyModel = { path: string; sha256: string; sizeBytes: number };

export async function tinyModel(): Promise<TinyModel> {
  const model = await ensureModel('tiny');
  return { path: model.path, sha256: model.sha256, sizeBytes: model.sizeBytes };
}

/** The real node-llama-cpp engine, CPU only, one thread (FACTS: more threads are slower on this box). */
export function createTestEngine(): Promise<LlamaEngine> {
  return LlamaEngine.create({ gpu: false, threads: 1, logger: testLogger() });
}
