export const MODEL_PRESETS = ['tiny', 'bench'] as const;
