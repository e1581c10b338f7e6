import { ForwardingEngine, ForwardingModel, type EngineModel } from '../../src/runtime/engine.js';

/**
 * Wraps a real engine; while `stuck` is set, a model's dispose rejects and the real model stays loaded (its memory
 * held), as a backend that cannot free its context would. Clearing `stuck` lets the next dispose free it for real.
 * node-llama-cpp gives no honest way to make a dispose fail, so the failure is injected here; model, runtime and
 * memory are real. `disposed` counts the real disposals.
 */
export class StuckDisposeEngine extends ForwardingEngine {
  stuck = false;
  failedDisposals = 0;
  disposed = 0;

  protected wrap(model: EngineModel): EngineModel {
    return new StuckDisposeModel(model, this);
  }
}

class StuckDisposeModel extends ForwardingModel {
  constructor(
    inner: EngineModel,
    private readonly engine: StuckDisposeEngine,
  ) {
    super(inner);
  }

  override async dispose(): Promise<void> {
    if (this.engine.stuck) {
      this.engine.failedDisposals++;
      throw new Error('ENOSPC: the backend could not free the model context');
    }
    await this.inner.dispose();
    this.engine.disposed++;
  }
}
