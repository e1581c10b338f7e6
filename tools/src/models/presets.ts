// Hyper-parameters of the generated llama-architecture models.

export const MODEL_PRESETS = ['tiny', 'bench'] as const;
export type ModelPreset = (typeof MODEL_PRESETS)[number];

export const MODEL_FORMATS = ['q8_0', 'f16'] as const;
export type ModelFormat = (typeof MODEL_FORMATS)[number];

export interface ModelHyperparameters {
  /** Embedding width (multiple of 32 for Q8_0). */
  embeddingLength: number;
  blockCount: number;
  /** Feed-forward width (multiple of 32 for Q8_0). */
  feedForwardLength: number;
  headCount: number;
  /** Grouped-query attention when below headCount. */
  headCountKv: number;
  contextLength: number;
  ropeFreqBase: number;
  rmsNormEpsilon: number;
}

export interface PresetDefinition {
  description: string;
  hyperparameters: ModelHyperparameters;
  /** Format used when none is given. */
  defaultFormat: ModelFormat;
}

export const PRESETS: Readonly<Record<ModelPreset, PresetDefinition>> = {
  tiny: {
    description: 'about 5M parameters, ~5 MB at Q8_0: for tests (loads and answers in well under a second)',
    hyperparameters: {
      embeddingLength: 256,
      blockCount: 4,
      feedForwardLength: 768,
      headCount: 4,
      headCountKv: 2,
      contextLength: 4096,
      ropeFreqBase: 10_000,
      rmsNormEpsilon: 1e-5,
    },
    defaultFormat: 'q8_0',
  },
  bench: {
    description: 'about 100M parameters, ~106 MB at Q8_0: for benchmarks',
    hyperparameters: {
      embeddingLength: 768,
      blockCount: 15,
      feedForwardLength: 2048,
      headCount: 12,
      headCountKv: 4,
      contextLength: 4096,
      ropeFreqBase: 10_000,
      rmsNormEpsilon: 1e-5,
    },
    defaultFormat: 'q8_0',
  },
};

export function isModelPreset(value: string): value is ModelPreset {
  return (MODEL_PRESETS as readonly string[]).includes(value);
}

export function isModelFormat(value: string): value is ModelFormat {
  return (MODEL_FORMATS as readonly string[]).includes(value);
}

/** Throws a RangeError listing every problem with a set of hyper-parameters. */
export function validateHyperparameters(h: ModelHyperparameters): void {
  const problems: string[] = [];
  const positiveInt = (name: keyof ModelHyperparameters): void => {
    if (!Number.isInteger(h[name]) || h[name] <= 0) problems.push(`${name} must be a positive integer`);
  };
  positiveInt('embeddingLength');
  positiveInt('blockCount');
  positiveInt('feedForwardLength');
  positiveInt('headCount');
  positiveInt('headCountKv');
  positiveInt('contextLength');
  if (h.embeddingLength % 32 !== 0) problems.push('embeddingLength must be a multiple of 32');
  if (h.feedForwardLength % 32 !== 0) problems.push('feedForwardLength must be a multiple of 32');
  if (h.embeddingLength % h.headCount !== 0) problems.push('embeddingLength must be divisible by headCount');
  if (h.headCount % h.headCountKv !== 0) problems.push('headCount must be divisible by headCountKv');
  if ((h.embeddingLength / h.headCount) % 2 !== 0) problems.push('head dimension must be even (RoPE)');
  if (!(h.ropeFreqBase > 0)) problems.push('ropeFreqBase must be positive');
  if (!(h.rmsNormEpsilon > 0)) problems.push('rmsNormEpsilon must be positive');
  if (problems.length > 0) throw new RangeError(`invalid model hyper-parameters: ${problems.join('; ')}`);
}
