// Shared node-llama-cpp set-up for model tests (FACTS: CPU only, never build, one thread on this 2-core box).
import { getLlama, GbnfJsonSchema, Llama, LlamaJsonSchemaGrammar, LlamaLogLevel } from 'node-llama-cpp';

let llamaPromise: Promise<Llama> | undefined;

export function getTestLlama(): Promise<Llama> {
  llamaPromise ??= getLlama({ gpu: false, build: 'never', maxThreads: 1, logLevel: LlamaLogLevel.warn, progressLogs: false });
  return llamaPromise;
}

export class SchemaAnswerError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
    this.name = 'SchemaAnswerError';
  }
}

/**
 * Parses a grammar-constrained answer. The grammar guarantees parseable JSON only; integer rules
 * allow exponents and ignore bounds (FACTS), so parse failures become one clear error.
 */
export function parseSchemaAnswer<const T extends GbnfJsonSchema>(grammar: LlamaJsonSchemaGrammar<T>, output: string): unknown {
  try {
    return grammar.parse(output);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new SchemaAnswerError(`model output does not satisfy the JSON schema: ${reason}; output: ${JSON.stringify(output.slice(0, 200))}`, output);
  }
}
