import { describe, expect, it } from 'vitest';
import { RoutingSchema } from '../models/fleet-file/fleet-file.js';
import type { CatalogModel } from './device-directory.js';
import type { NormalizedChat } from './openai-format.js';
import { classify, pickTierModel, servingTier, type ClassifierOptions, type TierCandidate } from './router.js';
import { policyFromRouting, policyFromSettings, policyView } from './routing-policy.js';
import { gatewayEnvSchema, gatewaySettingsFromEnv } from './gateway.settings.js';

const chat = (content: string, extra: Partial<NormalizedChat> = {}): NormalizedChat => ({
  requestedModel: 'auto',
  messages: [{ role: 'user', content }],
  stream: false,
  includeUsage: false,
  tools: undefined,
  toolChoice: undefined,
  responseFormat: undefined,
  maxTokens: undefined,
  temperature: undefined,
  topP: undefined,
  seed: undefined,
  stop: undefined,
  user: undefined,
  ...extra,
});
const tools: NormalizedChat['tools'] = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }];
/** The gateway section of a config loaded from `env`. */
const gatewaySettings = (env: Record<string, string> = {}) => gatewaySettingsFromEnv(gatewayEnvSchema.parse(env), (name) => env[name]);
const env = policyFromSettings(gatewaySettings());

describe('classify (model auto)', () => {
  it('follows the environment defaults: short -> small; tools, JSON or keywords -> medium; long or large keywords -> large', () => {
    expect(classify(chat('Hi!'), env).tier).toBe('small');
    expect(classify(chat('Hi!', { tools }), env)).toMatchObject({ tier: 'medium', reason: 'tools requested' });
    expect(classify(chat('Hi!', { tools, toolChoice: 'none' }), env).tier).toBe('small');
    expect(classify(chat('Hi!', { responseFormat: { type: 'json_object' } }), env).tier).toBe('medium');
    expect(classify(chat('Please summarize this.'), env)).toMatchObject({ tier: 'medium', reason: 'keyword "summarize"' });
    expect(classify(chat('Prove it step by step.'), env).tier).toBe('large');
    expect(classify(chat('x'.repeat(2000)), env).reason).toBe('prompt 2000 chars > 1500');
    expect(classify(chat('x'.repeat(7000)), env).tier).toBe('large');
  });

  it('takes the default tier, the tools tier and token limits from a routing block', () => {
    const options: ClassifierOptions = { ...env, defaultTier: 'medium', toolsMinTier: 'large', maxPromptTokens: { medium: 100 } };
    expect(classify(chat('Hi!'), options)).toMatchObject({ tier: 'medium', reason: 'default tier medium' });
    expect(classify(chat('Hi!', { tools }), options).tier).toBe('large');
    expect(classify(chat('x'.repeat(800)), options)).toMatchObject({ tier: 'large', reason: expect.stringMatching(/tokens > medium limit 100/) });
    // a token limit on small replaces the character threshold for small
    expect(classify(chat('x'.repeat(2000)), { ...env, maxPromptTokens: { small: 1000 } }).tier).toBe('small');
    // over every tier's limit: no tier
    expect(classify(chat('x'.repeat(800)), { ...env, maxPromptTokens: { small: 10, medium: 10, large: 10 } }).tier).toBeNull();
  });

  it('with auto disabled uses the default tier; a tier name starts there and only token limits move it', () => {
    expect(classify(chat('Prove it.', { tools }), { ...env, autoEnabled: false, defaultTier: 'medium' })).toMatchObject({ tier: 'medium', reason: 'auto routing disabled' });
    expect(classify(chat('x'.repeat(7000), { tools }), env, 'small').tier).toBe('small');
    expect(classify(chat('x'.repeat(800)), { ...env, maxPromptTokens: { small: 50 } }, 'small').tier).toBe('medium');
  });
});

describe('tiers and models', () => {
  const model = (name: string, tier: CatalogModel['tier']): CatalogModel => ({ name, tier, contextLength: 2048, createdAt: 0 });
  it('serves a model in the tier whose list names it, else in its catalog tier unless that tier has a list', () => {
    const lists = { small: ['b'], medium: [], large: [] };
    expect(servingTier(model('b', 'medium'), lists)).toBe('small');
    expect(servingTier(model('a', 'small'), lists)).toBeUndefined();
    expect(servingTier(model('c', 'medium'), lists)).toBe('medium');
  });

  it('picks the smallest tier with a free slot and escalates past a saturated one', () => {
    const c = (name: string, tier: TierCandidate['tier'], freeSlots: number, devices = ['d1']): TierCandidate => ({ model: model(name, tier), tier, devices, freeSlots });
    expect(pickTierModel('small', [c('s', 'small', 1), c('m', 'medium', 5)])).toMatchObject({ choice: { tier: 'small' }, escalated: false });
    expect(pickTierModel('small', [c('s', 'small', 0), c('m', 'medium', 5)])).toMatchObject({ choice: { tier: 'medium' }, escalated: true });
    expect(pickTierModel('small', [c('s', 'small', 0), c('m', 'medium', 0)])).toMatchObject({ choice: { model: { name: 's' } }, escalated: false });
    // nothing at or above medium: the largest served tier below answers, unless strict
    expect(pickTierModel('medium', [c('s', 'small', 3)], { strict: true })).toBeUndefined();
  });

  it('falls back to the largest served tier below the picked one when nothing at or above it is served', () => {
    const c = (name: string, tier: TierCandidate['tier'], freeSlots: number, devices = ['d1']): TierCandidate => ({ model: model(name, tier), tier, devices, freeSlots });
    expect(pickTierModel('medium', [c('s', 'small', 3)])).toMatchObject({ choice: { model: { name: 's' } }, escalated: false, lowered: true });
    // the largest one below, even when saturated (the request waits in its queue)
    expect(pickTierModel('large', [c('s', 'small', 3), c('m', 'medium', 0)])).toMatchObject({ choice: { model: { name: 'm' } }, lowered: true });
    // a tier without replicas is no candidate, and a tier the prompt is too long for is skipped
    expect(pickTierModel('large', [c('s', 'small', 3), c('m', 'medium', 3, [])])).toMatchObject({ choice: { model: { name: 's' } }, lowered: true });
    expect(pickTierModel('large', [c('s', 'small', 3)], { fits: ['medium', 'large'] })).toBeUndefined();
    // structured output on a small-only fleet (the `npm start` default): the rules pick medium, small answers
    const json = classify(chat('Give me JSON.', { responseFormat: { type: 'json_object' } }), env);
    expect(json).toMatchObject({ tier: 'medium', fits: ['small', 'medium', 'large'] });
    expect(pickTierModel(json.tier ?? 'large', [c('s', 'small', 3)], { fits: json.fits })).toMatchObject({ choice: { tier: 'small' }, lowered: true });
    // a long prompt that skipped small never falls back to it
    const long = classify(chat('x'.repeat(2000)), env);
    expect(long).toMatchObject({ tier: 'medium', fits: ['medium', 'large'] });
    expect(pickTierModel(long.tier ?? 'large', [c('s', 'small', 3)], { fits: long.fits })).toBeUndefined();
  });
});

describe('routing policy', () => {
  it('maps a fleet-file routing block over the environment and never shows the cloud key', () => {
    const routing = RoutingSchema.parse({
      defaultTier: 'medium',
      tiers: { small: ['tiny'] },
      auto: { toolsMinTier: 'large', maxPromptTokens: { small: 500 }, escalateOnFailure: false },
      cloudFallback: { enabled: true, baseUrl: 'http://cloud.test/v1', model: 'gpt-x', apiKeyEnv: 'CLOUD_KEY' },
      sessionAffinity: false,
      maxConcurrentPerDevice: 3,
      requestTimeoutMs: 5000,
      maxRetries: 0,
    });
    const p = policyFromRouting(routing, gatewaySettings({ FLOTILLA_GATEWAY_MEDIUM_PROMPT_CHARS: '900', CLOUD_KEY: 'sk-secret' }));
    expect(p).toMatchObject({
      source: 'fleet-file',
      defaultTier: 'medium',
      tierModels: { small: ['tiny'], medium: [], large: [] },
      toolsMinTier: 'large',
      maxPromptTokens: { small: 500 },
      mediumPromptChars: 900,
      escalateOnFailure: false,
      sessionAffinity: false,
      deviceConcurrency: 3,
      timeoutMs: 5000,
      maxAttempts: 1,
      cloud: { baseUrl: 'http://cloud.test/v1', model: 'gpt-x', apiKey: 'sk-secret', timeoutMs: 30_000 },
    });
    expect(JSON.stringify(policyView(p))).not.toContain('sk-secret');
    expect(policyView(p).cloud?.apiKeySet).toBe(true);
    // a block without an enabled cloud fallback turns off the environment's
    const envCloud = gatewaySettings({ FLOTILLA_GATEWAY_CLOUD_URL: 'http://env.test/v1' });
    expect(policyFromSettings(envCloud).cloud?.baseUrl).toBe('http://env.test/v1');
    expect(policyFromRouting(RoutingSchema.parse({}), envCloud).cloud).toBeUndefined();
  });

  it('reads new environment settings for the tiers and refuses bad ones', () => {
    const s = gatewaySettings({ FLOTILLA_GATEWAY_DEFAULT_TIER: 'medium', FLOTILLA_GATEWAY_TOOLS_MIN_TIER: 'small', FLOTILLA_GATEWAY_SESSION_AFFINITY: 'false' });
    expect(s).toMatchObject({ defaultTier: 'medium', toolsMinTier: 'small', sessionAffinity: false, escalateOnFailure: true, strictMinTier: false });
    expect(policyFromSettings(gatewaySettings({ FLOTILLA_GATEWAY_STRICT_MIN_TIER: 'true' })).strictMinTier).toBe(true);
    expect(policyFromRouting(RoutingSchema.parse({ auto: { strictMinTier: true } }), s).strictMinTier).toBe(true);
    expect(policyFromRouting(RoutingSchema.parse({}), s).strictMinTier).toBe(false);
    expect(() => gatewaySettings({ FLOTILLA_GATEWAY_DEFAULT_TIER: 'huge' })).toThrow(/FLOTILLA_GATEWAY_DEFAULT_TIER/);
  });
});
