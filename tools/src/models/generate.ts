// Builds a llama-architecture GGUF with deterministic pseudo-random weights.
import { resolve } from 'node:path';
import { GgufTensorSource, GgufValue, GgmlTypeName, tensorElementCount, writeGguf } from './gguf.js';
import { Xoshiro128 } from './prng.js';
import { ModelFormat, ModelHyperparameters, ModelPreset, PRESETS, validateHyperparameters } from './presets.js';
import { buildVocabulary, CHATML_TEMPLATE, FIRST_PIECE_TOKEN, PieceKind, SPECIAL_TOKENS } from './vocab.js';

/** Bump whenever the bytes produced for a given preset/format/seed change: it is part of the cache key. */
export const GENERATOR_VERSION = 2;
export const DEFAULT_MODEL_SEED = 42;

// Output-shaping constants (FACTS: random weights stop early and emit byte tokens without them).
/** Added to dimension 0 of every embedding row; output projections never write dimension 0. */
const EMBEDDING_DIM0_OFFSET = 4;
/** output.weight dimension 0 of tokens that must never be sampled (control, EOG, byte tokens). */
const SUPPRESSED_DIM0 = -10;
/** output.weight dimension 0 by piece kind: whole words are preferred, merge-only prefixes avoided. */
const PIECE_DIM0: Readonly<Record<PieceKind, number>> = { word: 0, symbol: -0.3, continuation: -0.6, prefix: -1.2 };
/** Spread of the output logits (roughly their standard deviation). */
const LOGIT_SCALE = 3;
/** Residual branches write at half the scale of their inputs. */
const RESIDUAL_SCALE = 0.5;

const SQRT3 = Math.sqrt(3);

export type Quantization = 'Q8_0' | 'F16';

export interface GenerateModelOptions {
  /** Output file (written atomically). */
  out: string;
  preset?: ModelPreset;
  format?: ModelFormat;
  /** Non-negative safe integer; same seed, preset and format give a byte-identical file. */
  seed?: number;
  /** Changes to the preset's hyper-parameters (the result is then no longer a standard preset). */
  overrides?: Partial<ModelHyperparameters>;
  /** general.name; defaults to `flotilla-<preset>-chatml-<format>`. */
  name?: string;
}

/** Everything a catalog needs to register the file. */
export interface GeneratedModelInfo {
  path: string;
  sha256: string;
  sizeBytes: number;
  parameters: number;
  name: string;
  architecture: 'llama';
  preset: ModelPreset;
  format: ModelFormat;
  quantization: Quantization;
  seed: number;
  contextLength: number;
  vocabSize: number;
  hyperparameters: ModelHyperparameters;
  chatTemplate: 'chatml';
  /** f16 K and V cache bytes per token of context, for memory planning. */
  kvCacheBytesPerToken: number;
  generatorVersion: number;
}

export function quantizationOf(format: ModelFormat): Quantization {
  return format === 'q8_0' ? 'Q8_0' : 'F16';
}

function assertSeed(seed: number): void {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer, got ${seed}`);
}

interface ModelPlan {
  metadata: Array<readonly [string, GgufValue]>;
  tensors: GgufTensorSource[];
  parameters: number;
  vocabSize: number;
}

function uniformTensor(
  name: string,
  dims: readonly number[],
  type: GgmlTypeName,
  seed: bigint,
  amplitude: number,
  fixRow?: (row: Float32Array, rowIndex: number) => void,
): GgufTensorSource {
  const rng = Xoshiro128.forStream(seed, name);
  const rowLength = dims[0] ?? 1;
  return {
    name,
    dims,
    type,
    fillRows(out, firstRow) {
      rng.fillUniform(out, amplitude);
      if (!fixRow) return;
      const rows = out.length / rowLength;
      for (let r = 0; r < rows; r++) fixRow(out.subarray(r * rowLength, (r + 1) * rowLength), firstRow + r);
    },
  };
}

function onesTensor(name: string, length: number): GgufTensorSource {
  return { name, dims: [length], type: 'F32', fillRows: (out) => void out.fill(1) };
}

/** The full tensor and metadata plan; weights are generated lazily while writing. */
export function planModel(
  hyperparameters: ModelHyperparameters,
  format: ModelFormat,
  seed: number,
  name: string,
  preset: ModelPreset,
): ModelPlan {
  validateHyperparameters(hyperparameters);
  assertSeed(seed);
  const h = hyperparameters;
  const vocab = buildVocabulary();
  const vocabSize = vocab.tokens.length;
  const d = h.embeddingLength;
  const headDim = d / h.headCount;
  const kvDim = headDim * h.headCountKv;
  const ff = h.feedForwardLength;
  const w: GgmlTypeName = format === 'q8_0' ? 'Q8_0' : 'F16';
  const s = BigInt(seed);
  const inputAmp = (fanIn: number): number => SQRT3 / Math.sqrt(fanIn);
  const zeroRow0 = (row: Float32Array, index: number): void => {
    if (index === 0) row.fill(0);
  };

  const tensors: GgufTensorSource[] = [
    uniformTensor('token_embd.weight', [d, vocabSize], w, s, 1, (row) => {
      row[0] = (row[0] ?? 0) + EMBEDDING_DIM0_OFFSET;
    }),
  ];
  for (let b = 0; b < h.blockCount; b++) {
    const p = `blk.${b}`;
    tensors.push(
      onesTensor(`${p}.attn_norm.weight`, d),
      uniformTensor(`${p}.attn_q.weight`, [d, d], w, s, inputAmp(d)),
      uniformTensor(`${p}.attn_k.weight`, [d, kvDim], w, s, inputAmp(d)),
      uniformTensor(`${p}.attn_v.weight`, [d, kvDim], w, s, inputAmp(d)),
      uniformTensor(`${p}.attn_output.weight`, [d, d], w, s, RESIDUAL_SCALE * inputAmp(d), zeroRow0),
      onesTensor(`${p}.ffn_norm.weight`, d),
      uniformTensor(`${p}.ffn_gate.weight`, [d, ff], w, s, inputAmp(d)),
      uniformTensor(`${p}.ffn_up.weight`, [d, ff], w, s, inputAmp(d)),
      uniformTensor(`${p}.ffn_down.weight`, [ff, d], w, s, RESIDUAL_SCALE * inputAmp(ff), zeroRow0),
    );
  }
  tensors.push(
    onesTensor('output_norm.weight', d),
    // Separate from token_embd: tied random weights repeat the last token forever.
    uniformTensor('output.weight', [d, vocabSize], w, s, LOGIT_SCALE * inputAmp(d), (row, token) => {
      if (token < FIRST_PIECE_TOKEN) {
        row.fill(0);
        row[0] = SUPPRESSED_DIM0;
      } else {
        row[0] = PIECE_DIM0[vocab.pieceKinds.get(token) ?? 'prefix'];
      }
    }),
  );

  const u32 = (value: number): GgufValue => ({ type: 'uint32', value });
  const metadata: Array<readonly [string, GgufValue]> = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: name }],
    ['general.description', { type: 'string', value: 'Flotilla generated test model: pseudo-random weights, not a trained model' }],
    ['general.file_type', u32(format === 'q8_0' ? 7 : 1)],
    ['general.quantization_version', u32(2)],
    ['general.alignment', u32(32)],
    ['llama.vocab_size', u32(vocabSize)],
    ['llama.context_length', u32(h.contextLength)],
    ['llama.embedding_length', u32(d)],
    ['llama.block_count', u32(h.blockCount)],
    ['llama.feed_forward_length', u32(ff)],
    ['llama.attention.head_count', u32(h.headCount)],
    ['llama.attention.head_count_kv', u32(h.headCountKv)],
    ['llama.rope.dimension_count', u32(headDim)],
    ['llama.rope.freq_base', { type: 'float32', value: h.ropeFreqBase }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'float32', value: h.rmsNormEpsilon }],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: vocab.tokens.map((t) => t.text) }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'float32', value: vocab.tokens.map((t) => t.score) }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'int32', value: vocab.tokens.map((t) => t.type) }],
    ['tokenizer.ggml.bos_token_id', u32(SPECIAL_TOKENS.bos.id)],
    ['tokenizer.ggml.eos_token_id', u32(SPECIAL_TOKENS.eos.id)],
    ['tokenizer.ggml.eot_token_id', u32(SPECIAL_TOKENS.imEnd.id)],
    ['tokenizer.ggml.unknown_token_id', u32(SPECIAL_TOKENS.unk.id)],
    ['tokenizer.ggml.padding_token_id', u32(SPECIAL_TOKENS.unk.id)],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
    ['tokenizer.chat_template', { type: 'string', value: CHATML_TEMPLATE }],
    ['flotilla.generator.version', u32(GENERATOR_VERSION)],
    ['flotilla.preset', { type: 'string', value: preset }],
    ['flotilla.seed', { type: 'uint64', value: s }],
  ];
  const parameters = tensors.reduce((sum, t) => sum + tensorElementCount(t.dims), 0);
  return { metadata, tensors, parameters, vocabSize };
}

export function resolveHyperparameters(preset: ModelPreset, overrides?: Partial<ModelHyperparameters>): ModelHyperparameters {
  return { ...PRESETS[preset].hyperparameters, ...overrides };
}

/** Parameter count of a preset (or custom hyper-parameters) without generating anything. */
export function countParameters(preset: ModelPreset, overrides?: Partial<ModelHyperparameters>): number {
  return planModel(resolveHyperparameters(preset, overrides), 'f16', 0, 'count', preset).parameters;
}

export async function generateModel(options: GenerateModelOptions): Promise<GeneratedModelInfo> {
  const preset = options.preset ?? 'tiny';
  const format = options.format ?? PRESETS[preset].defaultFormat;
  const seed = options.seed ?? DEFAULT_MODEL_SEED;
  const hyperparameters = resolveHyperparameters(preset, options.overrides);
  // "chatml" in the name makes node-llama-cpp test its ChatML wrapper against the template first:
  // creating a chat session then takes ~15 ms instead of ~400 ms of template probing.
  const name = options.name ?? `flotilla-${preset}-chatml-${format}`;
  const plan = planModel(hyperparameters, format, seed, name, preset);
  const written = await writeGguf(resolve(options.out), { metadata: plan.metadata, tensors: plan.tensors });
  const headDim = hyperparameters.embeddingLength / hyperparameters.headCount;
  return {
    path: written.path,
    sha256: written.sha256,
    sizeBytes: written.sizeBytes,
    parameters: plan.parameters,
    name,
    architecture: 'llama',
    preset,
    format,
    quantization: quantizationOf(format),
    seed,
    contextLength: hyperparameters.contextLength,
    vocabSize: plan.vocabSize,
    hyperparameters,
    chatTemplate: 'chatml',
    kvCacheBytesPerToken: 2 * hyperparameters.blockCount * headDim * hyperparameters.headCountKv * 2,
    generatorVersion: GENERATOR_VERSION,
  };
}
