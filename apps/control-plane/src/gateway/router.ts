import type { NormalizedChat } from './openai-format.js';
import { TIERS, type CatalogModel, type Tier } from './device-directory.js';

export const AUTO_MODEL = 'auto';
export const VIRTUAL_MODELS = [AUTO_MODEL, ...TIERS] as const;

export function isTier(name: string): name is Tier {
  return (TIERS as readonly string[]).includes(name);
}

export interface ClassifierOptions {
  mediumPromptChars: number;
  largePromptChars: number;
}

export interface Classification {
  tier: Tier;
  /** the rule that decided, for logs and the `x-flotilla-route` header */
  reason: string;
}

// Keywords in the last user message that ask for more than a short answer (docs/gateway.md, "Routing").
const LARGE_WORDS = /\b(prove|proof|step[- ]by[- ]step|in[- ]depth|derive|detailed analysis|architecture|refactor)\b/i;
const MEDIUM_WORDS = /\b(code|program|function|explain why|analy[sz]e|compare|summari[sz]e|translate|reason(ing)?|plan)\b/i;

/**
 * The transparent classifier behind model `auto`: the smallest tier whose rule the request does not break.
 * large: prompt longer than `largePromptChars`, or a large keyword; medium: tools requested (tool_choice not
 * `none`), structured output (`json_object`/`json_schema`), prompt longer than `mediumPromptChars`, or a medium
 * keyword; small: everything else.
 */
export function classify(chat: NormalizedChat, options: ClassifierOptions): Classification {
  const chars = promptChars(chat);
  const lastUser = [...chat.messages].reverse().find((m) => m.role === 'user')?.content ?? '';
  if (chars > options.largePromptChars) return { tier: 'large', reason: `prompt ${chars} chars > ${options.largePromptChars}` };
  const large = LARGE_WORDS.exec(lastUser);
  if (large) return { tier: 'large', reason: `keyword "${large[0]}"` };
  if (chat.tools && chat.toolChoice !== 'none') return { tier: 'medium', reason: 'tools requested' };
  if (chat.responseFormat && chat.responseFormat.type !== 'text') return { tier: 'medium', reason: `structured output (${chat.responseFormat.type})` };
  if (chars > options.mediumPromptChars) return { tier: 'medium', reason: `prompt ${chars} chars > ${options.mediumPromptChars}` };
  const medium = MEDIUM_WORDS.exec(lastUser);
  if (medium) return { tier: 'medium', reason: `keyword "${medium[0]}"` };
  return { tier: 'small', reason: 'short plain prompt' };
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
  devices: string[];
  freeSlots: number;
}

/**
 * Picks the model for a tier request: from `minTier` upward, the first tier with a model that has a free slot
 * (the model with most free slots wins); when every tier is saturated, the smallest tier that has replicas (the
 * request waits in its queue). Undefined when no tier at or above `minTier` has any replica.
 */
export function pickTierModel(minTier: Tier, candidates: readonly TierCandidate[]): { choice: TierCandidate; escalated: boolean } | undefined {
  const from = TIERS.indexOf(minTier);
  let fallback: TierCandidate | undefined;
  for (const tier of TIERS.slice(from)) {
    const inTier = candidates.filter((c) => c.model.tier === tier && c.devices.length > 0);
    if (inTier.length === 0) continue;
    fallback ??= inTier[0];
    const free = inTier.filter((c) => c.freeSlots > 0).sort((a, b) => b.freeSlots - a.freeSlots)[0];
    if (free) return { choice: free, escalated: tier !== minTier };
  }
  return fallback ? { choice: fallback, escalated: fallback.model.tier !== minTier } : undefined;
}
