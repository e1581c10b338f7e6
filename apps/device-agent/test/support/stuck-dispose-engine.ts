import type { GpuInfo, RuntimeInfo } from '@flotilla/protocol';
import type { EngineModel, GenerateHooks, GenerateOutput, GenerateRequest, InferenceEngine, LoadModelOptions } from '../../src/runtime/engine.js';

/**
 * Wraps a real engine; while `stuck` is set, a model's dispose rejects and the real model stays loaded (its memory
 * held), as a backend that cannot free its context would. Clearing `stuck` lets the next dispose free it for real.
 * node-llama-cpp gives no honest way to make a dispose fail, so the failure is injected here; model, runtime and
 * memory are real. `disposed` counts the real disposals.
 */
export class StuckDisposeEngine implements InferenceEngine {
  stuck = false;
  failedDisposals = 0;
  disposed = 0;

  constructor(private readonly inner: InferenceEngine) {}

  get runtimeInfo(): RuntimeInfo {
    return this.inner.runtimeInfo;
  }

  estimateMemory(options: LoadModelOptions): Promise<number> {
    return this.inner.estimateMemory(options);
  }

  async loadModel(options: LoadModelOptions): Promise<EngineModel> {
    return new StuckDisposeModel(await this.inner.loadModel(options), this);
  }

  gpus(): Promise<GpuInfo[]> {
    return this.inner.gpus();
  }

  dispose(): Promise<void> {
    return this.inner.dispose();
  }
}

class StuckDisposeModel implements EngineModel {
  constructor(
    private readonly inner: EngineModel,
    private readonly engine: StuckDisposeEngine,
  ) {}

  get memoryBytes(): number {
    return this.inner.memoryBytes;
  }

  get contextSize(): number {
    return this.inner.contextSize;
  }

  get parallel(): number {
    return this.inner.parallel;
  }

  get freeSequences(): number {
    return this.inner.freeSequences;
  }

  generate(request: GenerateRequest, hooks: GenerateHooks): Promise<GenerateOutput> {
    return this.inner.generate(request, hooks);
  }

  async dispose(): Promise<void> {
    if (this.engine.stuck) {
      this.engine.failedDisposals++;
      throw new Error('ENOSPC: the backend could not free the model context');
    }
    await this.inner.dispose();
    this.engine.disposed++;
  }
}
