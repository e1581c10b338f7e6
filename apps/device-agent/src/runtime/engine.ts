import type { ChatMessage, ErrorCode, FinishReason, GpuInfo, ResponseFormat, RuntimeInfo, Tool, ToolChoice } from '@flotilla/protocol';

/** One chat completion, in OpenAI terms (the protocol's request minus routing fields). */
export type GenerateRequest = {
  messages: readonly ChatMessage[];
  tools?: readonly Tool[];
  toolChoice?: ToolChoice;
  responseFormat?: ResponseFormat;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  seed?: number;
  stop?: readonly string[];
  /** Assistant text already delivered elsewhere: generation continues after it. */
  continuation?: string;
  /**
   * The token ids `continuation` was generated as, by the model file `modelSha256`. The runtime passes them on only
   * to the model loaded from that file; the engine then continues after exactly these tokens instead of the text.
   */
  continuationTokens?: { modelSha256: string; ids: readonly number[] };
};

export type GenerateHooks = {
  signal: AbortSignal;
  /** Called with each piece of visible text as it is generated, the number of tokens it came from and their ids. */
  onTextDelta?: (text: string, tokens: number, ids?: readonly number[]) => void;
};

export type GeneratedToolCall = { name: string; arguments: string };

export type GenerateOutput = {
  /** New text (without the continuation); null when the answer is only tool calls. */
  content: string | null;
  toolCalls: GeneratedToolCall[];
  finishReason: FinishReason;
  /** The request's prompt, without the continuation's tokens: a continued answer counts its prompt once. */
  promptTokens: number;
  completionTokens: number;
};

export type LoadModelOptions = { path: string; contextSize: number; parallel: number };

/** A loaded model with one context of `parallel` sequences; `generate` takes a free sequence. */
export interface EngineModel {
  readonly memoryBytes: number;
  readonly contextSize: number;
  readonly parallel: number;
  /**
   * Sequences free in the engine's own pool. A generation returns its sequence before `generate` settles, so with no
   * generation running this equals `parallel`.
   */
  readonly freeSequences: number;
  generate(request: GenerateRequest, hooks: GenerateHooks): Promise<GenerateOutput>;
  dispose(): Promise<void>;
}

/** What the runtime needs from an inference library; node-llama-cpp is the built-in one. */
export interface InferenceEngine {
  readonly runtimeInfo: RuntimeInfo;
  /** Estimated memory for a model file with the given context, before loading it. */
  estimateMemory(options: LoadModelOptions): Promise<number>;
  loadModel(options: LoadModelOptions): Promise<EngineModel>;
  gpus(): Promise<GpuInfo[]>;
  dispose(): Promise<void>;
}

/** An inference failure with the protocol error code clients and the gateway act on. */
export class InferenceFailure extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'InferenceFailure';
  }
}

/** An engine that hands every call to another one and wraps the models it loads: a base for decorators. */
export abstract class ForwardingEngine implements InferenceEngine {
  constructor(protected readonly inner: InferenceEngine) {}

  get runtimeInfo(): RuntimeInfo {
    return this.inner.runtimeInfo;
  }

  estimateMemory(options: LoadModelOptions): Promise<number> {
    return this.inner.estimateMemory(options);
  }

  async loadModel(options: LoadModelOptions): Promise<EngineModel> {
    return this.wrap(await this.inner.loadModel(options));
  }

  gpus(): Promise<GpuInfo[]> {
    return this.inner.gpus();
  }

  dispose(): Promise<void> {
    return this.inner.dispose();
  }

  protected abstract wrap(model: EngineModel): EngineModel;
}

/** A model that hands every call to another one; decorators override what they change. */
export class ForwardingModel implements EngineModel {
  constructor(protected readonly inner: EngineModel) {}

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

  dispose(): Promise<void> {
    return this.inner.dispose();
  }
}
