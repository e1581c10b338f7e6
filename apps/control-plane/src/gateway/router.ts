import type { NormalizedChat } from './openai-format.js';
import { TIERS, type CatalogModel, type Tier } from './device-directory.js';

export const AUTO_MODEL = 'auto';
export const VIRTUAL_MODELS = [AUTO_MODEL, ...TIERS] as const;

export function isTier(name: string): name is Tier {
  return (TIERS as readonly string[]).includes(name);
}

/** What the classifier reads from the routing policy (routing-policy.ts). */
export interface ClassifierOptions {
  /** the tier `auto` starts from */
  defaultTier: Tier;
  /** false: `auto` is the default tier, only the prompt-length limits move it */
  autoEnabled: boolean;
  /** tools or structured output start here at least */
  toolsMinTier: Tier;
  /** estimated prompt tokens above which a tier is skipped; a tier without one uses the character thresholds */
  maxPromptTokens: Partial<Record<Tier, number>>;
  /** prompts longer than this skip the small tier (when small has no token limit) */
  mediumPromptChars: number;
  /** prompts longer than this skip the medium tier (when medium has no token limit) */
  largePromptChars: number;
}

export interface Classification {
  /** null: the prompt is over every tier's limit */
  tier: Tier | null;
  /** the rule that decided, for logs and the `x-flotilla-route` header */
  reason: string;
  /**
   * The tiers the prompt's length allows (no token or character limit of theirs applies): a request may fall back
   * below `tier` when nothing at or above it is served, only to one of these.
   */
  fits: Tier[];
}

// Keywords in the last user message that ask for more than a short answer (docs/gateway.md, "Routing").
const LARGE_WORDS = /\b(prove|proof|step[- ]by[- ]step|in[- ]depth|derive|detailed analysis|architecture|refactor)\b/i;
const MEDIUM_WORDS = /\b(code|program|function|explain why|analy[sz]e|compare|summari[sz]e|translate|reason(ing)?|plan)\b/i;

const rank = (tier: Tier) => TIERS.indexOf(tier);

/**
 * The transparent classifier behind model `auto`: start at the default tier; tools or structured output
 * (`json_object`/`json_schema`) raise it to `toolsMinTier`; a large keyword in the last user message raises it to large,
 * a medium keyword to medium; then every tier the prompt is too long for is skipped (its `maxPromptTokens`, else
 * more than `mediumPromptChars` characters skips small and more than `largePromptChars` skips medium).
 * A tier name asked for directly (`small`, `medium`, `large`) starts there and only the token limits move it.
 */
export function classify(chat: NormalizedChat, options: ClassifierOptions, requested: 'auto' | Tier = 'auto'): Classification {
  let tier: Tier = requested === 'auto' ? options.defaultTier : requested;
  let reason = requested === 'auto' ? (options.autoEnabled ? 'short plain prompt' : 'auto routing disabled') : `tier ${requested} requested`;
  if (requested === 'auto' && options.defaultTier !== 'small' && options.autoEnabled) reason = `default tier ${options.defaultTier}`;
  const raise = (to: Tier, why: string) => {
    if (rank(to) > rank(tier)) {
      tier = to;
      reason = why;
    }
  };
  const classifying = requested === 'auto' && options.autoEnabled;
  if (classifying) {
    const lastUser = [...chat.messages].reverse().find((m) => m.role === 'user')?.content ?? '';
    if (chat.tools && chat.toolChoice !== 'none') raise(options.toolsMinTier, 'tools requested');
    if (chat.responseFormat && chat.responseFormat.type !== 'text') raise(options.toolsMinTier, `structured output (${chat.responseFormat.type})`);
    const large = LARGE_WORDS.exec(lastUser);
    if (large) raise('large', `keyword "${large[0]}"`);
    const medium = MEDIUM_WORDS.exec(lastUser);
    if (medium) raise('medium', `keyword "${medium[0]}"`);
  }
  const chars = promptChars(chat);
  const tokens = estimatePromptTokens(chat);
  const tooLong = (t: Tier): string | undefined => {
    const limit = options.maxPromptTokens[t];
    if (limit !== undefined) return tokens > limit ? `prompt ~${tokens} tokens > ${t} limit ${limit}` : undefined;
    if (!classifying) return undefined;
    if (t === 'small' && chars > options.mediumPromptChars) return `prompt ${chars} chars > ${options.mediumPromptChars}`;
    if (t === 'medium' && chars > options.largePromptChars) return `prompt ${chars} chars > ${options.largePromptChars}`;
    return undefined;
  };
  for (let why = tooLong(tier); why !== undefined; why = tooLong(tier)) {
    const next = TIERS[rank(tier) + 1];
    if (!next) return { tier: null, reason: why, fits: [] };
    tier = next;
    reason = why;
  }
  return { tier, reason, fits: TIERS.filter((t) => tooLong(t) === undefined) };
}

export function promptChars(chat: NormalizedChat): number {
  let chars = 0;
  for (const m of chat.messages) {
    chars += m.content?.length ?? 0;
    if (m.role === 'assistant' && m.tool_calls) for (const c of m.tool_calls) chars += c.function.arguments.length + c.function.name.length;
  }
  if (chat.tools) chars += JSON.stringify(chat.tools).length;
  return chars;
}

/**
 * Prompt tokens, estimated before any device sees the request: ~4 characters per token plus a few per message for
 * the chat template. The device counts exactly and refuses what does not fit (CONTEXT_LENGTH_EXCEEDED).
 */
export function estimatePromptTokens(chat: NormalizedChat): number {
  return Math.ceil(promptChars(chat) / 4) + 4 * chat.messages.length;
}

export interface TierCandidate {
  model: CatalogModel;
  /** the tier it serves (the routing block may list a model under another tier than the catalog's) */
  tier: Tier;
  devices: string[];
  freeSlots: number;
}

export interface TierPick {
  choice: TierCandidate;
  /** served from a tier above `minTier` (the picked tier was saturated or has no replica) */
  escalated: boolean;
  /** served from a tier below `minTier`: nothing at or above it has a replica */
  lowered: boolean;
}

/**
 * Picks the model for a tier request: from `minTier` upward, the first tier with a model that has a free slot
 * (the model with most free slots wins); when every tier is saturated, the smallest tier that has replicas (the
 * request waits in its queue). When no tier at or above `minTier` has any replica: unless `strict`, the largest tier
 * below it that has one and is in `fits` (default: every tier), so a one-model fleet answers with its model.
 * Undefined when none qualifies.
 */
export function pickTierModel(minTier: Tier, candidates: readonly TierCandidate[], options: { fits?: readonly Tier[]; strict?: boolean } = {}): TierPick | undefined {
  const from = rank(minTier);
  const best = (tier: Tier): { any: TierCandidate; free: TierCandidate | undefined } | undefined => {
    const inTier = candidates.filter((c) => c.tier === tier && c.devices.length > 0);
    const any = inTier[0];
    if (!any) return undefined;
    return { any, free: inTier.filter((c) => c.freeSlots > 0).sort((a, b) => b.freeSlots - a.freeSlots)[0] };
  };
  let fallback: TierCandidate | undefined;
  for (const tier of TIERS.slice(from)) {
    const b = best(tier);
    if (!b) continue;
    fallback ??= b.any;
    if (b.free) return { choice: b.free, escalated: tier !== minTier, lowered: false };
  }
  if (fallback) return { choice: fallback, escalated: fallback.tier !== minTier, lowered: false };
  if (options.strict) return undefined;
  for (const tier of TIERS.slice(0, from).reverse()) {
    if (options.fits && !options.fits.includes(tier)) continue;
    const b = best(tier);
    if (b) return { choice: b.free ?? b.any, escalated: false, lowered: true };
  }
  return undefined;
}

/**
 * The tier a catalog model serves under the routing policy: the tier whose list names it, else its catalog tier when
 * that tier has no list; undefined when it serves no tier (its tier lists other models only).
 */
export function servingTier(model: CatalogModel, tierModels: Record<Tier, readonly string[]>): Tier | undefined {
  for (const t of TIERS) if (tierModels[t].includes(model.name)) return t;
  return tierModels[model.tier].length === 0 ? model.tier : undefined;
}
