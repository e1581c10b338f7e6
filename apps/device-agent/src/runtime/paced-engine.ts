import { ForwardingEngine, ForwardingModel, InferenceFailure, type EngineModel, type GenerateHooks, type GenerateOutput, type GenerateRequest, type InferenceEngine } from './engine.js';

/** One text delta handed to the agent, with performance.now() at that moment. */
export type TokenRecord = { text: string; at: number };

/**
 * Wraps a real engine and hands its text deltas to the agent at most one per `gapMs`, recording when each was handed
 * over. The tiny model makes a token every ~0.4 ms, faster than a chunk crosses the broker; paced like a larger model,
 * "was the first chunk sent before the second token existed" becomes a question with a deterministic answer.
 * `abortDelayMs` is how long a generation takes to stop after its signal aborts (a large model finishing an
 * evaluation step); no delta is handed over meanwhile. The agent uses it only as a test seam
 * (`streaming.testTokenGapMs`), so an end-to-end test can act between two chunks of a real agent's stream.
 */
export class PacedEngine extends ForwardingEngine {
  /** Every streamed generation's deltas, in start order. */
  readonly generations: TokenRecord[][] = [];

  constructor(
    inner: InferenceEngine,
    private readonly gapMs: number,
    private readonly abortDelayMs = 0,
  ) {
    super(inner);
  }

  protected wrap(model: EngineModel): EngineModel {
    return new PacedModel(model, this.gapMs, this.abortDelayMs, this.generations);
  }
}

class PacedModel extends ForwardingModel {
  constructor(
    inner: EngineModel,
    private readonly gapMs: number,
    private readonly abortDelayMs: number,
    private readonly generations: TokenRecord[][],
  ) {
    super(inner);
  }

  override async generate(request: GenerateRequest, hooks: GenerateHooks): Promise<GenerateOutput> {
    const deliver = hooks.onTextDelta;
    if (!deliver) return this.inner.generate(request, hooks);
    const record: TokenRecord[] = [];
    this.generations.push(record);
    const queue: { text: string; tokens: number; ids: readonly number[] | undefined }[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    const output = this.inner
      .generate(request, {
        signal: hooks.signal,
        onTextDelta: (text, tokens, ids) => {
          queue.push({ text, tokens, ids });
          wake?.();
        },
      })
      .finally(() => {
        done = true;
        wake?.();
      });
    output.catch(() => undefined); // awaited below; avoids an unhandled rejection while tokens are still paced
    while (!hooks.signal.aborted) {
      const next = queue[0];
      if (next === undefined) {
        if (done) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      if (record.length > 0) await sleep(this.gapMs, hooks.signal);
      if (hooks.signal.aborted) break;
      queue.shift();
      record.push({ text: next.text, at: performance.now() });
      deliver(next.text, next.tokens, next.ids);
    }
    if (hooks.signal.aborted) {
      await output.catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, this.abortDelayMs));
      throw new InferenceFailure('CANCELLED', 'generation stopped');
    }
    return output;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
