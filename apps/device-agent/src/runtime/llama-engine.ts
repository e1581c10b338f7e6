import type { ChatMessage, GpuInfo, RuntimeInfo, Tool } from '@flotilla/protocol';
import {
  getLlama,
  getModuleVersion,
  GgufInsights,
  LlamaChat,
  LlamaJsonSchemaValidationError,
  LlamaLogLevel,
  readGgufFileInfo,
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelFunctions,
  type GbnfJsonSchema,
  type Llama,
  type LlamaChatResponse,
  type LlamaChatResponseChunk,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  TokenBias,
  type Token,
} from 'node-llama-cpp';
import type { Logger } from '../logger.js';
import {
  InferenceFailure,
  type EngineModel,
  type GenerateHooks,
  type GenerateOutput,
  type GenerateRequest,
  type GeneratedToolCall,
  type InferenceEngine,
  type LoadModelOptions,
} from './engine.js';

export type LlamaEngineOptions = {
  /** false: CPU only; 'auto': let node-llama-cpp pick CUDA/Vulkan/Metal when present. */
  gpu: false | 'auto';
  /** Threads for generation; 1 on small boxes (more is much slower on 2 vCPUs, see FACTS). */
  threads: number;
  logger: Logger;
};

const LLAMA_LOG_LINES = 20;
/** Template tokens per message that tokenizing the contents alone does not count. */
const TEMPLATE_TOKENS_PER_MESSAGE = 8;
/** Tokens of the continuation's end that the first new token is detokenized against. */
const CONTINUATION_CONTEXT_TOKENS = 8;
/** Logit bias that makes a forced token the only choice of any sampler (finite: +Infinity turns softmax into NaN). */
const FORCED_TOKEN_LOGIT = 1e5;
/** How long a generation waits for a sequence that is still being returned to the pool before giving up. */
const SEQUENCE_WAIT_MS = 5000;
/** Re-check interval while waiting, in case a sequence comes back through node-llama-cpp's GC path. */
const SEQUENCE_POLL_MS = 50;

/** The built-in engine: node-llama-cpp in process, prebuilt binaries only (`build: 'never'`). */
export class LlamaEngine implements InferenceEngine {
  private constructor(
    private readonly llama: Llama,
    readonly runtimeInfo: RuntimeInfo,
    private readonly options: LlamaEngineOptions,
    private readonly recentLogs: string[],
  ) {}

  static async create(options: LlamaEngineOptions): Promise<LlamaEngine> {
    const recentLogs: string[] = [];
    const log = options.logger.child({ component: 'llama.cpp' });
    const llama = await getLlama({
      gpu: options.gpu,
      build: 'never',
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      // llama.cpp's own lines carry the real reason behind "Failed to load model" (FACTS).
      logger: (level, message) => {
        const line = message.trim();
        if (line === '') return;
        recentLogs.push(line);
        if (recentLogs.length > LLAMA_LOG_LINES) recentLogs.shift();
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log.error(line);
        else log.debug(line);
      },
    });
    const version = await getModuleVersion();
    const gpuBackend = llama.gpu === false ? 'cpu' : llama.gpu;
    return new LlamaEngine(llama, { name: 'node-llama-cpp', version, gpuBackend }, options, recentLogs);
  }

  async estimateMemory(options: LoadModelOptions): Promise<number> {
    const info = await readGgufFileInfo(options.path);
    const insights = await GgufInsights.from(info, this.llama);
    const model = await insights.estimateModelResourceRequirementsV2({ gpuLayers: 0 });
    const context = await insights.estimateContextResourceRequirementsV2({
      contextSize: options.contextSize,
      sequences: options.parallel,
      modelGpuLayers: 0,
    });
    return model.cpuRam + model.gpuVram + context.cpuRam + context.gpuVram;
  }

  async loadModel(options: LoadModelOptions): Promise<EngineModel> {
    this.recentLogs.length = 0;
    let model: LlamaModel;
    try {
      model = await this.llama.loadModel({ modelPath: options.path });
    } catch (error) {
      throw new InferenceFailure('MODEL_LOAD_FAILED', this.withLogs(error));
    }
    try {
      const context = await model.createContext({ contextSize: options.contextSize, sequences: options.parallel, threads: this.options.threads });
      const memoryBytes = await this.estimateMemory(options).catch(() => model.size);
      return new LlamaEngineModel(this.llama, model, context, options, memoryBytes, this.options.logger);
    } catch (error) {
      await model.dispose();
      const message = this.withLogs(error);
      throw new InferenceFailure(/memory|alloc/i.test(message) ? 'INSUFFICIENT_MEMORY' : 'MODEL_LOAD_FAILED', message);
    }
  }

  async gpus(): Promise<GpuInfo[]> {
    if (this.llama.gpu === false) return [];
    const [names, vram] = await Promise.all([this.llama.getGpuDeviceNames(), this.llama.getVramState()]);
    return [{ name: names.join(', ').slice(0, 256) || String(this.llama.gpu), vendor: this.llama.gpu, vramBytes: vram.total, vramFreeBytes: vram.free }];
  }

  async dispose(): Promise<void> {
    await this.llama.dispose();
  }

  private withLogs(error: unknown): string {
    const message = error instanceof Error ? error.message : String(error);
    const details = this.recentLogs.filter((line) => !message.includes(line)).slice(-3);
    return details.length > 0 ? `${message}: ${details.join(' | ')}` : message;
  }
}

class LlamaEngineModel implements EngineModel {
  readonly contextSize: number;
  readonly parallel: number;
  private readonly releaseWaiters = new Set<() => void>();

  constructor(
    private readonly llama: Llama,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    options: LoadModelOptions,
    readonly memoryBytes: number,
    private readonly logger: Logger,
  ) {
    this.contextSize = options.contextSize;
    this.parallel = options.parallel;
  }

  async generate(request: GenerateRequest, hooks: GenerateHooks): Promise<GenerateOutput> {
    const promptEstimate = this.estimatePromptTokens(request);
    if (promptEstimate >= this.contextSize) {
      throw new InferenceFailure('CONTEXT_LENGTH_EXCEEDED', `the prompt is about ${promptEstimate} tokens, the context holds ${this.contextSize}`);
    }
    // Stop at the context's end with finish reason "length" instead of letting context shift drop the prompt.
    const room = this.contextSize - promptEstimate;
    const maxTokens = Math.max(1, Math.min(request.maxTokens ?? room, room));
    const plan = await this.planOutput(request);

    const forced = this.forcedTokens(request);
    const sequence = await this.acquireSequence(hooks.signal);
    const onTextDelta = hooks.onTextDelta;
    // node-llama-cpp detokenizes the first new token without the continuation before it, so a SentencePiece word
    // token loses its leading space ("key now" continued after "key" came back as "keynow"). Detokenizing that first
    // text against the continuation's last tokens gives the text the uninterrupted generation had.
    const continuationTail = request.continuation && !forced ? this.model.tokenize(request.continuation).slice(-CONTINUATION_CONTEXT_TOKENS) : undefined;
    let firstText: { original: string; fixed: string } | undefined;
    const textOf = (chunk: LlamaChatResponseChunk): string => {
      if (!continuationTail || firstText || chunk.text === '') return chunk.text;
      firstText = { original: chunk.text, fixed: this.model.detokenize(chunk.tokens, false, continuationTail) };
      return firstText.fixed;
    };
    const pendingTokens: Token[] = [];
    let chat: LlamaChat | undefined;
    try {
      chat = new LlamaChat({ contextSequence: sequence });
      const extraSystem = plan.kind === 'forced-tool' ? plan.extraSystem : undefined;
      // With the continuation's token ids, the answer is generated from the start again, its first tokens forced (below):
      // the prompt, the tokens and the one-at-a-time evaluation are those of the uninterrupted answer. Re-sent text
      // tokenizes differently ("▁is" generated, "is" re-tokenized) and a prefix evaluated as one batch gives slightly
      // different logits, and either made the continuation diverge.
      const history = toHistory(
        extraSystem ? [{ role: 'system', content: extraSystem }, ...request.messages] : request.messages,
        forced ? undefined : request.continuation,
      );
      const common = {
        signal: hooks.signal,
        stopOnAbortSignal: false,
        maxTokens: maxTokens + (forced?.ids.length ?? 0),
        ...(forced ? { tokenBias: forced.bias } : {}),
        ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
        ...(request.topP === undefined ? {} : { topP: request.topP }),
        ...(request.seed === undefined ? {} : { seed: request.seed }),
        ...(request.stop && request.stop.length > 0 ? { customStopTriggers: [...request.stop] } : {}),
        // Forced tool calls are JSON meant for the tool_calls field, not text to stream. Text goes with the number of
        // tokens it came from, so the gateway can count what a stream delivered before a failover.
        ...((onTextDelta || continuationTail) && plan.kind !== 'forced-tool'
          ? {
              onResponseChunk: (chunk: LlamaChatResponseChunk) => {
                if (chunk.type !== undefined) return;
                // A token without text of its own goes with the next text, so the ids sent cover every token.
                pendingTokens.push(...chunk.tokens);
                if (chunk.text === '') return;
                const tokens = pendingTokens.splice(0);
                if (forced && !forced.done) {
                  const fresh = forced.take(tokens, chunk.text);
                  if (fresh) onTextDelta?.(fresh.text, fresh.tokens.length, fresh.tokens);
                  return;
                }
                const text = textOf(chunk);
                if (text !== '') onTextDelta?.(text, tokens.length, tokens);
              },
            }
          : {}),
      };
      let response: LlamaChatResponse<ChatModelFunctions>;
      if (plan.kind === 'functions') response = await chat.generateResponse(history, { ...common, functions: plan.functions });
      else response = await chat.generateResponse(history, { ...common, ...(plan.grammar ? { grammar: plan.grammar } : {}) });

      const meter = sequence.tokenMeter.getState();
      // The continuation was evaluated as input (text) or regenerated (forced tokens count as output), but the client's
      // prompt and the new tokens are what the request is billed for.
      const continuationTokens = request.continuation && !forced ? this.model.tokenize(request.continuation).length : 0;
      const forcedCount = forced?.ids.length ?? 0;
      const usage = { promptTokens: Math.max(0, meter.usedInputTokens - continuationTokens), completionTokens: Math.max(0, meter.usedOutputTokens - forcedCount) };
      if (forced) {
        // The forced tokens must have come back as the text the client has; the rest is this attempt's answer.
        if (!forced.done && forced.ids.length > 0) forced.finish(response.response);
        response = { ...response, response: response.response.slice(forced.text.length) };
      }
      if (firstText && response.response.startsWith(firstText.original)) {
        response = { ...response, response: firstText.fixed + response.response.slice(firstText.original.length) };
      }
      const stopReason = response.metadata.stopReason;
      const truncated = stopReason === 'maxTokens';

      if (plan.kind === 'forced-tool') {
        if (truncated) throw new InferenceFailure('GENERATION_FAILED', `the tool call was cut off after ${maxTokens} tokens (raise max_tokens)`);
        const parsed = parseJson(plan.grammar, response.response);
        const call: GeneratedToolCall = plan.single
          ? { name: plan.single, arguments: JSON.stringify(parsed) }
          : toolCallFromEnvelope(parsed);
        return { content: null, toolCalls: [call], finishReason: 'tool_calls', ...usage };
      }
      if (plan.kind === 'functions' && response.functionCalls && response.functionCalls.length > 0) {
        const toolCalls = response.functionCalls.map((call) => ({ name: call.functionName, arguments: JSON.stringify(call.params ?? {}) }));
        return { content: response.response === '' ? null : response.response, toolCalls, finishReason: 'tool_calls', ...usage };
      }
      if (plan.kind === 'grammar' && plan.grammar && !truncated) parseJson(plan.grammar, response.response);
      return { content: response.response, toolCalls: [], finishReason: truncated ? 'length' : 'stop', ...usage };
    } catch (error) {
      if (error instanceof InferenceFailure) throw error;
      if (hooks.signal.aborted) throw new InferenceFailure('CANCELLED', 'generation stopped');
      const message = error instanceof Error ? error.message : String(error);
      if (/context (size|shift)|fit the context|too long/i.test(message)) throw new InferenceFailure('CONTEXT_LENGTH_EXCEEDED', message);
      throw new InferenceFailure('GENERATION_FAILED', message);
    } finally {
      // The sequence goes back to the context's pool only when its async dispose settles (it waits for the
      // context lock); returning earlier lets the runtime hand the slot to a job that then finds no sequence.
      chat?.dispose({ disposeSequence: false });
      await this.releaseSequence(sequence);
    }
  }

  /**
   * The continuation's token ids as forced first tokens: each sampling step before they are used up gets a logit bias
   * that leaves only the next of them, so they go through the same one-token-at-a-time path (same kernels, same
   * repeat-penalty window, same random draws) as when they were generated. Costs one decode step per forced token,
   * about the time the first device took to generate them, instead of one batched prompt evaluation. Undefined (text
   * continuation) when there are no ids or one is outside this model's vocabulary.
   */
  private forcedTokens(request: GenerateRequest): ForcedPrefix | undefined {
    const ids = request.continuationTokens?.ids;
    if (!ids || ids.length === 0 || request.continuation === undefined) return undefined;
    // Same sha256, same vocabulary; still, an id from a faulty peer must not reach llama.cpp.
    const vocabulary = this.model.fileInfo.metadata.tokenizer?.ggml?.tokens?.length ?? 0;
    if (ids.some((id) => id >= vocabulary || this.model.isEogToken(id as Token))) {
      this.logger.warn({ tokens: ids.length }, 'continuation token ids do not fit this model; continuing after the text');
      return undefined;
    }
    return new ForcedPrefix(this.model, ids as readonly Token[], request.continuation);
  }

  /** node-llama-cpp's own count, which only grows back once a sequence's dispose has settled. */
  get freeSequences(): number {
    return this.context.sequencesLeft;
  }

  /**
   * Takes a sequence from the context. The runtime never runs more than `parallel` generations at once, so an empty
   * pool only means a release is still settling: wait for it (abortably, bounded) instead of refusing the request.
   */
  private async acquireSequence(signal: AbortSignal): Promise<LlamaContextSequence> {
    const until = Date.now() + SEQUENCE_WAIT_MS;
    if (this.context.sequencesLeft === 0) this.logger.warn({ parallel: this.parallel }, 'no free sequence yet, waiting for one to return to the pool');
    while (this.context.sequencesLeft === 0) {
      if (signal.aborted) throw new InferenceFailure('CANCELLED', 'generation stopped while waiting for a sequence');
      const left = until - Date.now();
      if (left <= 0) throw new InferenceFailure('QUEUE_FULL', `no free sequence in the context after ${SEQUENCE_WAIT_MS} ms (parallel ${this.parallel})`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          this.releaseWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, SEQUENCE_POLL_MS));
        signal.addEventListener('abort', done, { once: true });
        this.releaseWaiters.add(done);
      });
    }
    return this.context.getSequence();
  }

  private async releaseSequence(sequence: LlamaContextSequence): Promise<void> {
    try {
      await sequence.dispose();
    } finally {
      for (const wake of [...this.releaseWaiters]) wake();
    }
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
  }

  private estimatePromptTokens(request: GenerateRequest): number {
    let tokens = 0;
    for (const message of request.messages) {
      const text = message.content ?? '';
      tokens += this.model.tokenize(text).length + TEMPLATE_TOKENS_PER_MESSAGE;
      if (message.role === 'assistant') {
        for (const call of message.tool_calls ?? []) tokens += this.model.tokenize(call.function.arguments).length + TEMPLATE_TOKENS_PER_MESSAGE;
      }
    }
    if (request.tools) tokens += this.model.tokenize(JSON.stringify(request.tools)).length;
    if (request.continuation) tokens += this.model.tokenize(request.continuation).length;
    return tokens;
  }

  /** Decides how tools and response_format are honoured: native function calling, or a JSON grammar. */
  private async planOutput(request: GenerateRequest): Promise<OutputPlan> {
    const tools = request.tools ?? [];
    const choice = request.toolChoice ?? (tools.length > 0 ? 'auto' : 'none');
    if (tools.length > 0 && choice !== 'none') {
      if (typeof choice === 'object') {
        const tool = tools.find((candidate) => candidate.function.name === choice.function.name);
        if (!tool) throw new InferenceFailure('INVALID_REQUEST', `tool_choice names ${choice.function.name}, which is not in tools`);
        return {
          kind: 'forced-tool',
          single: tool.function.name,
          grammar: await this.grammarFor(tool.function.parameters ?? { type: 'object' }, `tools.${tool.function.name}.parameters`),
          extraSystem: `Call the function ${describeTool(tool)}. Answer with its arguments as a JSON object.`,
        };
      }
      if (choice === 'required') {
        const envelope = {
          oneOf: tools.map((tool) => ({
            type: 'object',
            properties: { name: { const: tool.function.name }, arguments: tool.function.parameters ?? { type: 'object' } },
            required: ['name', 'arguments'],
          })),
        };
        return {
          kind: 'forced-tool',
          grammar: await this.grammarFor(envelope, 'tools'),
          extraSystem: `Call one of these functions and answer with {"name": ..., "arguments": {...}}:\n${tools.map(describeTool).join('\n')}`,
        };
      }
      const functions: ChatModelFunctions = Object.fromEntries(
        tools.map((tool) => [
          tool.function.name,
          {
            ...(tool.function.description ? { description: tool.function.description } : {}),
            ...(tool.function.parameters ? { params: tool.function.parameters as GbnfJsonSchema } : {}),
          },
        ]),
      );
      return { kind: 'functions', functions };
    }
    const format = request.responseFormat;
    if (format?.type === 'json_schema') {
      return { kind: 'grammar', grammar: await this.grammarFor(format.json_schema.schema, 'response_format.json_schema.schema') };
    }
    if (format?.type === 'json_object') return { kind: 'grammar', grammar: await this.llama.getGrammarFor('json') };
    return { kind: 'grammar' };
  }

  private async grammarFor(schema: unknown, where: string): Promise<LlamaGrammar> {
    try {
      // The request's schema is checked by llama.cpp's converter here; unsupported parts are reported, not guessed.
      return await this.llama.createGrammarForJsonSchema(schema as Parameters<Llama['createGrammarForJsonSchema']>[0]);
    } catch (error) {
      throw new InferenceFailure('INVALID_REQUEST', `${where}: unsupported JSON schema: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
}

/** The forced first tokens of a token-level continuation and the text they come back as. */
class ForcedPrefix {
  /** text of the forced tokens as generated again */
  text = '';
  done = false;
  private sampled = 0;
  private taken = 0;
  private readonly biases: TokenBias[] = [];
  private readonly none: TokenBias;

  constructor(
    private readonly model: LlamaModel,
    readonly ids: readonly Token[],
    private readonly expected: string,
  ) {
    this.none = new TokenBias(model.tokenizer);
  }

  /** node-llama-cpp resolves the token bias once per sampled token. */
  readonly bias = (): TokenBias => {
    const index = this.sampled++;
    if (index >= this.ids.length) return this.none;
    this.biases[index] ??= new TokenBias(this.model.tokenizer).set(this.ids[index] as Token, { logit: FORCED_TOKEN_LOGIT });
    return this.biases[index];
  };

  /** Consumes a generated piece; returns the part after the forced tokens, if any. */
  take(tokens: Token[], text: string): { text: string; tokens: Token[] } | undefined {
    const left = this.ids.length - this.taken;
    if (tokens.length <= left) {
      this.check(tokens, this.taken);
      this.taken += tokens.length;
      this.text += text;
      if (this.taken === this.ids.length) this.finish(this.text);
      return undefined;
    }
    // A piece across the boundary: its new tokens are detokenized against the forced ones before them.
    const mine = tokens.slice(0, left);
    const fresh = tokens.slice(left);
    this.check(mine, this.taken);
    this.taken += left;
    this.text += this.model.detokenize(mine, false, this.ids.slice(0, this.taken - left));
    this.finish(this.text);
    const freshText = this.model.detokenize(fresh, false, this.ids.slice(-CONTINUATION_CONTEXT_TOKENS));
    return freshText === '' ? undefined : { text: freshText, tokens: fresh };
  }

  /** The forced tokens are all out: they must read as the text the client already has. */
  finish(text: string): void {
    this.done = true;
    if (!text.startsWith(this.expected) || text.length < this.expected.length) {
      throw new InferenceFailure('GENERATION_FAILED', 'the continuation tokens did not reproduce the text already delivered');
    }
    this.text = this.expected;
  }

  private check(tokens: readonly Token[], from: number): void {
    for (let i = 0; i < tokens.length; i++) {
      if (tokens[i] !== this.ids[from + i]) throw new InferenceFailure('GENERATION_FAILED', `continuation token ${from + i} was not reproduced`);
    }
  }
}

type OutputPlan =
  | { kind: 'grammar'; grammar?: LlamaGrammar }
  | { kind: 'functions'; functions: ChatModelFunctions }
  | { kind: 'forced-tool'; grammar: LlamaGrammar; single?: string; extraSystem: string };

function describeTool(tool: Tool): string {
  const params = tool.function.parameters ? ` with parameters ${JSON.stringify(tool.function.parameters)}` : '';
  return `${tool.function.name}${tool.function.description ? ` (${tool.function.description})` : ''}${params}`;
}

/** Grammars always yield parseable JSON, but not always schema-valid JSON (FACTS): check again. */
function parseJson(grammar: LlamaGrammar | undefined, text: string): unknown {
  try {
    if (grammar && 'parse' in grammar && typeof grammar.parse === 'function') return (grammar.parse as (text: string) => unknown)(text);
    return JSON.parse(text) as unknown;
  } catch (error) {
    const detail = error instanceof LlamaJsonSchemaValidationError || error instanceof Error ? error.message : String(error);
    throw new InferenceFailure('GENERATION_FAILED', `the model's output does not satisfy the JSON schema: ${detail}`);
  }
}

function toolCallFromEnvelope(value: unknown): GeneratedToolCall {
  if (typeof value === 'object' && value !== null && 'name' in value && typeof value.name === 'string') {
    const args = 'arguments' in value ? value.arguments : {};
    return { name: value.name, arguments: JSON.stringify(args ?? {}) };
  }
  throw new InferenceFailure('GENERATION_FAILED', 'the model did not produce a tool call');
}

function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** OpenAI messages -> node-llama-cpp chat history; tool results attach to the call they answer. */
export function toHistory(messages: readonly ChatMessage[], continuation?: string): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const calls = new Map<string, ChatModelFunctionCall>();
  for (const message of messages) {
    switch (message.role) {
      case 'system':
        history.push({ type: 'system', text: message.content });
        break;
      case 'user':
        history.push({ type: 'user', text: message.content });
        break;
      case 'assistant': {
        const response: (string | ChatModelFunctionCall)[] = message.content ? [message.content] : [];
        for (const toolCall of message.tool_calls ?? []) {
          const call: ChatModelFunctionCall = { type: 'functionCall', name: toolCall.function.name, params: parseArguments(toolCall.function.arguments), result: '' };
          calls.set(toolCall.id, call);
          response.push(call);
        }
        history.push({ type: 'model', response });
        break;
      }
      case 'tool': {
        const call = calls.get(message.tool_call_id);
        if (call) call.result = message.content;
        else history.push({ type: 'user', text: `Result of tool call ${message.tool_call_id}: ${message.content}` });
        break;
      }
    }
  }
  history.push({ type: 'model', response: continuation ? [continuation] : [] });
  return history;
}
