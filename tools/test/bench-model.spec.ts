// The ~100M-parameter bench preset: generated and loaded, kept cheap (a few tokens).
import { join } from 'node:path';
import { LlamaCompletion } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateModel } from '../src/models/index.js';
import { getTestLlama } from './support/llama.js';
import { makeTempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('bench-model'));
});
afterAll(async () => {
  await cleanup();
});

describe('bench preset', () => {
  it('generates a ~100M-parameter Q8_0 file quickly and runs it', async () => {
    const started = performance.now();
    const info = await generateModel({ out: join(dir, 'bench.gguf'), preset: 'bench', format: 'q8_0' });
    const generateMs = Math.round(performance.now() - started);
    expect(info.parameters).toBeGreaterThan(90_000_000);
    expect(info.parameters).toBeLessThan(110_000_000);
    expect(info.sizeBytes).toBeGreaterThan(100_000_000);
    expect(generateMs).toBeLessThan(20_000);

    const llama = await getTestLlama();
    const loadStarted = performance.now();
    const model = await llama.loadModel({ modelPath: info.path });
    const context = await model.createContext({ contextSize: 256, threads: 1 });
    const loadMs = Math.round(performance.now() - loadStarted);
    const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
    const genStarted = performance.now();
    const text = await completion.generateCompletion('The fleet', { maxTokens: 4 });
    const genMs = Math.round(performance.now() - genStarted);
    console.log(
      `bench q8_0: ${info.parameters} params, ${info.sizeBytes} bytes, generated in ${generateMs} ms, ` +
        `loaded in ${loadMs} ms, 4 tokens in ${genMs} ms -> ${JSON.stringify(text)}`,
    );
    expect(text.trim().length).toBeGreaterThan(0);
    expect(text).not.toContain('\uFFFD');
    completion.dispose();
    await context.dispose();
    await model.dispose();
  });
});
