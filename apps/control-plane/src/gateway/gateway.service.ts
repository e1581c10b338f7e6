import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { ErrorCode, type AttemptEnd, LIMITS, type FinishReason, type InferenceRequest, type InferenceResult, type RequestAttempt, type ToolCall, type ToolCallDelta } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { LOGGER } from '../platform/tokens.js';
import { AppError } from '../platform/common/app-error.js';
import { FleetEvents } from '../platform/events/fleet-events.js';
import { GatewayAccounting, type RequestOutcome } from './accounting.js';
import { Balancer, type Lease } from './balancer.js';
import type { CloudFallback } from './cloud-fallback.js';
import { DeviceDirectory, TIERS, type CatalogModel, type Tier } from './device-directory.js';
import { Dispatcher, type AttemptFailure } from './dispatcher.js';
import { GATEWAY_SETTINGS, type GatewaySettings } from './gateway.settings.js';
import type { GatewayKey } from './gateway-keys.js';
import { GatewayError, type NormalizedChat, type Usage } from './openai-format.js';
import { AUTO_MODEL, classify, estimatePromptTokens, isTier, pickTierModel, servingTier, type TierCandidate } from './router.js';
import { GatewayRouting, type RoutingPolicy } from './routing-policy.js';

/** Receives a streamed answer; `begin` fires once, just before the first delta. */
export interface ChatSink {
  begin(info: AnswerInfo): void;
  content(delta: string): void;
  toolCalls(deltas: ToolCallDelta[]): void;
}

export interface AnswerInfo {
  model: string;
  deviceId: string | null;
  cloud: boolean;
  /** every device whose text is in the answer, in order (a failover continues on another device) */
  devices?: string[];
}

export interface ChatOutcome extends AnswerInfo {
  content: string | null;
  toolCalls: ToolCall[] | undefined;
  finishReason: FinishReason;
  usage: Usage;
  retries: number;
  route: string;
}

export interface ChatContext {
  requestId: string;
  key: GatewayKey;
  /** aborted when the client goes away */
  signal: AbortSignal;
}

/** A failure after the stream began: the controller ends it with one error event. */
export class StreamFailure extends Error {
  constructor(readonly error: GatewayError) {
    super(error.message);
  }
}

/** What the request record gets, noted as the request goes. */
interface Noted {
  model: string | null;
  tier: Tier | null;
  deviceId: string | null;
  cloud: boolean;
  ttftMs: number | null;
  usage: Usage;
  retries: number;
  attempts: RequestAttempt[];
}

type RoutedModel = CatalogModel | { name: string; tier: null; contextLength: null };

interface Route {
  model: RoutedModel;
  /** the tier the model serves in this request (null for a named model outside the catalog) */
  tier: Tier | null;
  reason: string;
  /** chosen by tier (`auto` or a tier name): may escalate to a larger tier when every replica fails */
  byTier: boolean;
}

type AttemptOutcome = { ok: true; result: InferenceResult; ttftMs: number | null } | { ok: false; failure: AttemptFailure; blame: boolean; ttftMs: number | null };

// Codes that say the device, not the request, is at fault (a cooldown counts them). Capacity answers (queue full,
// draining, model not ready) move the request elsewhere without blame; client errors never count. [P-6]
const DEVICE_FAULTS = new Set<string>([ErrorCode.GENERATION_FAILED, ErrorCode.INTERNAL, ErrorCode.DEVICE_OFFLINE, ErrorCode.MODEL_LOAD_FAILED]);
/** Answers that mean "busy now": retried without spending an attempt. */
const BUSY = new Set<string>([ErrorCode.QUEUE_FULL]);
const MAX_BUSY_RETRIES = 50;
const FIRST_TOKEN_MISSED = 'first token deadline missed';

/**
 * Serves one chat completion: routes (`auto`, tiers, names), balances over devices with a ready replica, dispatches
 * over MQTT and fails over invisibly; a stream cut mid-answer continues on another replica from the text already
 * sent [P-3.6 continuation]. Falls back to the cloud endpoint when no device can serve.
 */
@Injectable()
export class GatewayService implements OnModuleInit, OnModuleDestroy {
  private stopOffline: (() => void) | undefined;
  private stopOnline: (() => void) | undefined;
  private stopRevoked: (() => void) | undefined;

  constructor(
    @Inject(GATEWAY_SETTINGS) private readonly settings: GatewaySettings,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly directory: DeviceDirectory,
    private readonly dispatcher: Dispatcher,
    private readonly accounting: GatewayAccounting,
    readonly balancer: Balancer,
    private readonly routing: GatewayRouting,
    private readonly events: FleetEvents,
  ) {}

  onModuleInit(): void {
    // Only devices that said online to this process get work; one still reconnecting after a restart is waited for.
    this.balancer.gateBy((deviceId) => this.directory.isOnline(deviceId));
    this.stopOnline = this.directory.onDeviceOnline(() => this.balancer.wake());
    // A dead device's jobs fail over at once instead of waiting for their timers. [P-3.2]
    this.stopOffline = this.directory.onDeviceOffline((deviceId) => {
      this.balancer.forgetDevice(deviceId);
      this.dispatcher.abandonDevice(deviceId, { code: ErrorCode.DEVICE_OFFLINE, message: `device ${deviceId} went offline`, retryable: true });
    });
    // Revocation is final: the device's load goes too (and with it its per-device gauges in /metrics).
    this.stopRevoked = this.events.on('device.status', ({ deviceId, status }) => {
      if (status === 'revoked') this.balancer.removeDevice(deviceId);
    });
  }

  onModuleDestroy(): void {
    this.stopOffline?.();
    this.stopOnline?.();
    this.stopRevoked?.();
  }

  /** Model names for `GET /v1/models`: the catalog, anything served outside it, and the virtual names. */
  async modelNames(): Promise<{ name: string; created: number }[]> {
    const catalog = await this.directory.models();
    const out = new Map<string, number>();
    for (const m of catalog.values()) out.set(m.name, Math.floor(m.createdAt / 1000));
    for (const name of this.directory.servedModels()) if (!out.has(name)) out.set(name, 0);
    return [...out].map(([name, created]) => ({ name, created }));
  }

  async chat(chat: NormalizedChat, ctx: ChatContext, sink?: ChatSink): Promise<ChatOutcome> {
    const started = Date.now();
    // One policy for the whole request, even if the fleet file changes meanwhile.
    const policy = this.routing.current;
    const deadline = started + policy.timeoutMs;
    let record: Noted = {
      model: null,
      tier: null,
      deviceId: null,
      cloud: false,
      ttftMs: null,
      usage: { promptTokens: 0, completionTokens: 0 },
      retries: 0,
      attempts: [],
    };
    let outcome: RequestOutcome = 'failed';
    let errorCode: string | null = null;
    try {
      const result = await this.serve(chat, ctx, policy, deadline, sink, (r) => {
        record = { ...record, ...r };
      });
      outcome = 'success';
      return result;
    } catch (error) {
      const e = error instanceof StreamFailure ? error.error : error;
      errorCode = e instanceof GatewayError ? e.openaiCode : 'internal';
      outcome = ctx.signal.aborted ? 'cancelled' : errorCode === 'timeout' ? 'timeout' : e instanceof GatewayError && e.getStatus() < 500 ? 'rejected' : 'failed';
      throw error;
    } finally {
      this.accounting.record({
        requestId: ctx.requestId,
        requestedModel: chat.requestedModel,
        model: record.model,
        tier: record.tier,
        deviceId: record.deviceId,
        cloud: record.cloud,
        latencyMs: Date.now() - started,
        ttftMs: record.ttftMs,
        tokensIn: record.usage.promptTokens,
        tokensOut: record.usage.completionTokens,
        outcome,
        errorCode,
        retries: record.retries,
        stream: chat.stream,
        apiKeyId: ctx.key.id,
        attempts: record.attempts,
      });
    }
  }

  private async serve(
    chat: NormalizedChat,
    ctx: ChatContext,
    policy: RoutingPolicy,
    deadline: number,
    sink: ChatSink | undefined,
    note: (r: Partial<Noted>) => void,
  ): Promise<ChatOutcome> {
    const started = Date.now();
    const cloud = this.routing.cloud();
    const route = await this.route(chat, ctx.key, policy, cloud !== undefined);
    if (!route) return this.viaCloud(cloud, chat, ctx, sink, note, 'no device serves this model', started, []);
    let current: { model: RoutedModel; tier: Tier | null } = route;
    let routeReason = route.reason;
    note({ model: current.model.name, tier: current.tier });
    checkContext(chat, current.model);
    const affinityKey = policy.sessionAffinity ? (chat.user ? `u:${chat.user}` : conversationKey(chat)) : undefined;
    const tried = new Set<string>();
    let sent = ''; // assistant text received from devices (and streamed to the client): a failover continues after it
    // The token ids of `sent` and the model file they came from, while every chunk named its ids: a failover to a
    // device with the same file continues after exactly these tokens. [P-3.6 continuation]
    let sentIds: { modelSha256: string; ids: number[] } | undefined = { modelSha256: '', ids: [] };
    let toolCallsSent = false;
    let begun = false;
    let deliveredTokens = 0; // completion tokens of `sent` that attempts delivered before they died
    let ttftMs: number | null = null;
    let lastFailure: AttemptFailure | undefined;
    let attempts = 0; // across models, for the `attempt` field and the retry count
    const log: RequestAttempt[] = [];
    note({ attempts: log });
    /** Devices whose text is in the answer, in order. */
    const answered = (): string[] => [...new Set(log.filter((a) => a.deviceId !== null && (a.end === 'ok' || a.tokens > 0)).map((a) => a.deviceId as string))];

    for (;;) {
      const model = current.model.name;
      let busyRetries = 0;
      for (let attempt = 1; attempt <= policy.maxAttempts; attempt++) {
        if (Date.now() >= deadline) break;
        if (sent.length > 0 && chat.maxTokens !== undefined && deliveredTokens >= chat.maxTokens) {
          // The attempts that died already delivered max_tokens: the answer is complete, cut at the length limit.
          if (sink && !begun) sink.begin({ model, deviceId: null, cloud: false });
          const usage = { promptTokens: estimatePromptTokens(chat), completionTokens: deliveredTokens };
          note({ usage });
          return { model, deviceId: log.at(-1)?.deviceId ?? null, devices: answered(), cloud: false, content: sent, toolCalls: undefined, finishReason: 'length', usage, retries: attempts - 1, route: routeReason };
        }
        const candidates = this.directory.devicesFor(model);
        let lease: Lease;
        try {
          lease = await this.acquire(model, candidates, tried, affinityKey, ctx.signal, deadline);
        } catch (error) {
          if (attempt === 1 && cloud && !begun && error instanceof AppError && error.code === ErrorCode.NO_DEVICE_AVAILABLE) {
            return this.viaCloud(cloud, chat, ctx, sink, note, error.message, started, log);
          }
          if (attempt > 1 && error instanceof AppError && error.code === ErrorCode.NO_DEVICE_AVAILABLE && tried.size > 0) {
            // every replica was tried: fall through to the failure below
            break;
          }
          throw this.wrap(toGatewayError(error), begun);
        }
        tried.add(lease.deviceId);
        attempts++;
        note({ deviceId: lease.deviceId, retries: attempts - 1 });
        const continuation = sent.length > 0 ? sent : undefined;
        const continuationTokens = continuation && sentIds && sentIds.ids.length > 0 && sentIds.ids.length <= LIMITS.continuationTokenIds ? sentIds : undefined;
        // A continuation gets only what is left of the client's budget. [P-3.6 continuation]
        const maxTokens = chat.maxTokens === undefined ? undefined : chat.maxTokens - (continuation ? deliveredTokens : 0);
        const fileSha = this.directory.modelSha256(lease.deviceId, model);
        let attemptTokens = 0;
        let toolCallsSeen = false;
        const startedAt = Date.now();
        const request = continuation ? { content: continuation, ...(continuationTokens ? { tokens: { modelSha256: continuationTokens.modelSha256, ids: [...continuationTokens.ids] } } : {}) } : undefined;
        const outcome = await this.attempt(ctx, lease.deviceId, attempts, model, chat, maxTokens, deadline, request, started, (chunk, tokens, ids) => {
          attemptTokens += tokens;
          if (chunk.content) {
            sent += chunk.content;
            // Ids count only if every chunk had them and they all come from one file.
            if (sentIds && ids && ids.length === tokens && fileSha && (sentIds.ids.length === 0 || sentIds.modelSha256 === fileSha)) {
              sentIds.modelSha256 = fileSha;
              sentIds.ids.push(...ids);
            } else sentIds = undefined;
          }
          if (chunk.toolCalls) toolCallsSeen = true;
          if (!sink) return;
          if (!begun) {
            begun = true;
            sink.begin({ model, deviceId: lease.deviceId, cloud: false });
          }
          if (chunk.content) sink.content(chunk.content);
          if (chunk.toolCalls) {
            toolCallsSent = true;
            sink.toolCalls(chunk.toolCalls);
          }
        });
        const logAttempt = (end: AttemptEnd, tokens: number, code?: string): void => {
          log.push({ attempt: attempts, deviceId: lease.deviceId, startedAt, endedAt: Date.now(), end, ...(code ? { code } : {}), tokens, continuationChars: continuation?.length ?? 0 });
        };
        ttftMs ??= outcome.ttftMs;
        note({ ttftMs });
        if (outcome.ok) {
          const r = outcome.result;
          const genMs = Math.max(1, r.timings.totalMs - r.timings.ttftMs);
          lease.release('success', { tokens: r.usage.completionTokens, genMs });
          logAttempt('ok', r.usage.completionTokens);
          const content = r.message.content;
          if (sink && content !== null && content.length > sent.length && content.startsWith(sent) && !toolCallsSent) {
            // chunks lost on the way: the result carries the whole text [P-3.7]
            if (!begun) {
              begun = true;
              sink.begin({ model, deviceId: lease.deviceId, cloud: false });
            }
            sink.content(content.slice(sent.length));
          }
          if (sink && !begun) sink.begin({ model, deviceId: lease.deviceId, cloud: false });
          // Usage is what the client got: this attempt's tokens plus those the dead attempts delivered before it.
          const usage = { promptTokens: r.usage.promptTokens, completionTokens: r.usage.completionTokens + (continuation ? deliveredTokens : 0) };
          note({ usage });
          return {
            model,
            deviceId: lease.deviceId,
            devices: answered(),
            cloud: false,
            content,
            toolCalls: r.message.tool_calls,
            finishReason: r.finishReason,
            usage,
            retries: attempts - 1,
            route: routeReason,
          };
        }
        const { failure } = outcome;
        lease.release(outcome.blame ? 'device-failure' : 'neutral');
        lastFailure = failure;
        this.logger.info({ requestId: ctx.requestId, deviceId: lease.deviceId, attempt: attempts, model, code: failure.code, sentChars: sent.length }, 'gateway attempt failed');
        if (!failure.retryable || ctx.signal.aborted) throw this.wrap(failureToError(failure), begun);
        if (BUSY.has(failure.code) && busyRetries < MAX_BUSY_RETRIES) {
          // The device is busy, not broken: this costs no attempt and the device stays eligible, after a short pause.
          busyRetries++;
          attempt--;
          attempts--;
          // A busy device never started this attempt, so it may take it (or its continuation) after the pause.
          tried.delete(lease.deviceId);
          await new Promise((r) => setTimeout(r, Math.min(200, 10 * busyRetries) + Math.random() * 10));
          continue;
        }
        if (!sink && toolCallsSeen) {
          // Nothing reached the client yet: a tool call cannot be continued, so the next attempt starts over.
          sent = '';
          sentIds = { modelSha256: '', ids: [] };
          deliveredTokens = 0;
          attemptTokens = 0;
        }
        logAttempt(attemptEnd(failure), attemptTokens, failure.code);
        if (toolCallsSent) {
          throw this.wrap(new GatewayError(502, 'device_failed', 'the device serving this stream failed during a tool call; the answer cannot be continued'), begun);
        }
        deliveredTokens += attemptTokens;
      }
      // Every try on this model failed. Before anything reached the client, a tier route may move up a tier.
      const canEscalate = route.byTier && policy.escalateOnFailure && !begun && current.tier !== null && !ctx.signal.aborted && Date.now() < deadline;
      const next = canEscalate && current.tier ? await this.nextTier(chat, ctx.key, policy, current.tier) : undefined;
      if (next) {
        this.logger.info({ requestId: ctx.requestId, from: model, to: next.model.name }, 'gateway: escalating to the next tier after failures');
        routeReason = `${routeReason}; ${model} failed -> ${next.tier} (escalated)`;
        current = next;
        tried.clear();
        note({ model: next.model.name, tier: next.tier });
        continue;
      }
      throw this.wrap(
        Date.now() >= deadline
          ? new GatewayError(504, 'timeout', `no answer within ${policy.timeoutMs} ms`)
          : new GatewayError(503, 'no_device_available', `every attempt failed${lastFailure ? ` (last: ${lastFailure.code} ${lastFailure.message})` : ''}`, { 'retry-after': '1' }),
        begun,
      );
    }
  }

  private wrap(error: GatewayError, begun: boolean): Error {
    return begun ? new StreamFailure(error) : error;
  }

  private acquire(model: string, candidates: string[], tried: Set<string>, affinityKey: string | undefined, signal: AbortSignal, deadline: number): Promise<Lease> {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(onAbort, Math.max(0, deadline - Date.now()));
    return this.balancer
      .acquire({ model, candidates, exclude: tried, ...(affinityKey ? { affinityKey } : {}) }, controller.signal)
      .finally(() => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      });
  }

  /** One attempt on one device, with its first-token/stall and deadline timers and client-disconnect cancel. */
  private attempt(
    ctx: ChatContext,
    deviceId: string,
    attempt: number,
    model: string,
    chat: NormalizedChat,
    maxTokens: number | undefined,
    deadline: number,
    continuation: InferenceRequest['continuation'],
    started: number,
    onChunk: (delta: { content?: string; toolCalls?: ToolCallDelta[] }, tokens: number, ids: readonly number[] | undefined) => void,
  ): Promise<AttemptOutcome> {
    return new Promise<AttemptOutcome>((resolve) => {
      let ttftMs: number | null = null;
      let settled = false;
      let stall: NodeJS.Timeout | undefined;
      const finish = (o: AttemptOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(stall);
        clearTimeout(overall);
        ctx.signal.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const armStall = () => {
        clearTimeout(stall);
        // No token for this long: the device is stuck (or gone without a will yet); try another one.
        stall = setTimeout(() => {
          this.dispatcher.cancel(ctx.requestId, 'failover');
          finish({ ok: false, failure: { code: ErrorCode.GENERATION_FAILED, message: FIRST_TOKEN_MISSED, retryable: true }, blame: true, ttftMs });
        }, Math.min(this.settings.firstTokenTimeoutMs, Math.max(0, deadline - Date.now())));
      };
      const overall = setTimeout(() => {
        this.dispatcher.cancel(ctx.requestId, 'deadline');
        finish({ ok: false, failure: { code: ErrorCode.DEADLINE_EXCEEDED, message: 'deadline passed', retryable: false }, blame: false, ttftMs });
      }, Math.max(0, deadline - Date.now()));
      const onAbort = () => {
        this.dispatcher.cancel(ctx.requestId, 'client-disconnected');
        finish({ ok: false, failure: { code: ErrorCode.CANCELLED, message: 'client disconnected', retryable: false }, blame: false, ttftMs });
      };
      if (ctx.signal.aborted) return onAbort();
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      armStall();
      this.dispatcher.send(
        deviceId,
        {
          requestId: ctx.requestId,
          attempt,
          model,
          messages: chat.messages,
          ...(chat.tools ? { tools: chat.tools } : {}),
          ...(chat.toolChoice ? { toolChoice: chat.toolChoice } : {}),
          ...(chat.responseFormat ? { responseFormat: chat.responseFormat } : {}),
          ...(maxTokens !== undefined ? { maxTokens } : {}),
          ...(chat.temperature !== undefined ? { temperature: chat.temperature } : {}),
          ...(chat.topP !== undefined ? { topP: chat.topP } : {}),
          ...(chat.seed !== undefined ? { seed: chat.seed } : {}),
          ...(chat.stop ? { stop: chat.stop } : {}),
          ...(continuation ? { continuation } : {}),
          ...(chat.user ? { sessionKey: sessionKeyOf(chat.user) } : {}),
          priority: 5,
          deadline,
          // Always streamed from the device: tokens show it is alive, and a stream can be continued elsewhere.
          stream: true,
        },
        {
          onChunk: (chunk) => {
            if (settled) return;
            ttftMs ??= Date.now() - started;
            armStall();
            // An agent that does not count tokens per chunk sends about one per chunk.
            onChunk(chunk.delta, chunk.tokens ?? 1, chunk.tokenIds);
          },
          onResult: (result) => {
            ttftMs ??= Date.now() - started;
            finish({ ok: true, result, ttftMs });
          },
          onFailure: (failure) =>
            finish({ ok: false, failure, blame: failure.retryable && DEVICE_FAULTS.has(failure.code), ttftMs }),
        },
      );
    });
  }

  private async route(chat: NormalizedChat, key: GatewayKey, policy: RoutingPolicy, cloudConfigured: boolean): Promise<Route | undefined> {
    const name = chat.requestedModel;
    const catalog = await this.directory.models();
    // A key restricted to some models reaches the cloud only when its list names the cloud model (docs/gateway.md).
    const cloud = cloudConfigured && this.cloudAllowed(key, chat);
    if (name !== AUTO_MODEL && !isTier(name)) {
      const model = catalog.get(name);
      if (!model && !this.directory.servedModels().has(name)) {
        throw new GatewayError(404, 'model_not_found', `The model \`${name}\` does not exist or you do not have access to it.`, {}, 'model');
      }
      if (this.directory.devicesFor(name).length === 0 && cloud) return undefined;
      return { model: model ?? { name, tier: null, contextLength: null }, tier: model?.tier ?? null, reason: 'named model', byTier: false };
    }
    const classified = classify(chat, policy, isTier(name) ? name : 'auto');
    if (classified.tier === null) {
      if (cloud) return undefined;
      throw new GatewayError(400, 'context_length_exceeded', `The prompt is longer than every tier allows (${classified.reason}).`, {}, 'messages');
    }
    const candidates = await this.tierCandidates(chat, key, policy);
    if (key.allowList.length > 0 && candidates.length === 0) {
      throw new GatewayError(403, 'model_not_allowed', `this API key's allow-list names no catalog model that \`${name}\` may route to`, {}, 'model');
    }
    // Rather the largest model the fleet serves than none (a one-model fleet answers every request), unless strict or a
    // cloud fallback this key may use can serve the tier asked for.
    const picked = pickTierModel(classified.tier, candidates, { fits: classified.fits, strict: policy.strictMinTier || cloud });
    if (!picked) {
      if (cloud) return undefined;
      throw new GatewayError(503, 'no_device_available', `no online device serves a ${classified.tier} (or larger) model now`, { 'retry-after': '5' });
    }
    const how = picked.escalated ? ' (escalated)' : picked.lowered ? ` (no ${classified.tier} or larger model served: best served tier)` : '';
    const reason = `${classified.reason} -> ${picked.choice.tier}${how}`;
    return { model: picked.choice.model, tier: picked.choice.tier, reason, byTier: true };
  }

  /**
   * The cloud fallback is another model: a key with an allow-list may use it only when the list names it as
   * `cloud:<model asked of the endpoint>` (the name the answer and the metrics carry).
   */
  private cloudAllowed(key: GatewayKey, chat: NormalizedChat): boolean {
    if (key.allowList.length === 0) return true;
    const cloud = this.routing.cloud();
    return cloud !== undefined && key.allowList.includes(`cloud:${cloud.modelFor(chat.requestedModel)}`);
  }

  /**
   * Catalog models by the tier they serve under the policy, that the key may use and whose context fits the request.
   * A key with an allow-list reaches only the catalog models it names, whatever tier names it lists (`auto` or `small`
   * allow asking by tier, not every model a tier or an escalation could reach).
   */
  private async tierCandidates(chat: NormalizedChat, key: GatewayKey, policy: RoutingPolicy): Promise<TierCandidate[]> {
    const catalog = await this.directory.models();
    const restricted = key.allowList.length > 0;
    const needed = estimatePromptTokens(chat) + (chat.maxTokens ?? 0);
    const out: TierCandidate[] = [];
    for (const m of catalog.values()) {
      if (restricted && !key.allowList.includes(m.name)) continue;
      if (needed > m.contextLength) continue;
      const tier = servingTier(m, policy.tierModels);
      if (!tier) continue;
      const devices = this.directory.devicesFor(m.name);
      out.push({ model: m, tier, devices, freeSlots: this.balancer.freeSlots(devices) });
    }
    return out;
  }

  /** A model of a tier above `above` with an online replica, for escalation after failures. */
  private async nextTier(chat: NormalizedChat, key: GatewayKey, policy: RoutingPolicy, above: Tier): Promise<{ model: CatalogModel; tier: Tier } | undefined> {
    const next = TIERS[TIERS.indexOf(above) + 1];
    if (!next) return undefined;
    // strict: escalation only moves up, never back to the tier that just failed
    const picked = pickTierModel(next, await this.tierCandidates(chat, key, policy), { strict: true });
    return picked ? { model: picked.choice.model, tier: picked.choice.tier } : undefined;
  }

  private async viaCloud(
    cloud: CloudFallback | undefined,
    chat: NormalizedChat,
    ctx: ChatContext,
    sink: ChatSink | undefined,
    note: (r: Partial<Noted>) => void,
    why: string,
    started: number,
    log: RequestAttempt[],
  ): Promise<ChatOutcome> {
    if (!cloud) throw new GatewayError(503, 'no_device_available', why, { 'retry-after': '5' });
    if (!this.cloudAllowed(ctx.key, chat)) {
      throw new GatewayError(503, 'no_device_available', `${why}; this API key may not use the cloud fallback`, { 'retry-after': '5' });
    }
    note({ cloud: true, attempts: log });
    // The cloud is one more attempt in the request record, with no device. [request record]
    const attempt = { attempt: (log.at(-1)?.attempt ?? 0) + 1, deviceId: null, startedAt: Date.now(), continuationChars: 0 };
    let begun = false;
    try {
      const answer = await cloud.complete(
        chat,
        ctx.signal,
        sink
          ? (delta) => {
              if (!begun) {
                begun = true;
                note({ ttftMs: Date.now() - started });
                sink.begin({ model: chat.requestedModel, deviceId: null, cloud: true });
              }
              sink.content(delta);
            }
          : undefined,
      );
      if (sink && !begun) sink.begin({ model: answer.model, deviceId: null, cloud: true });
      log.push({ ...attempt, endedAt: Date.now(), end: 'ok', tokens: answer.usage.completionTokens });
      note({ model: answer.model, usage: answer.usage });
      return { ...answer, deviceId: null, cloud: true, retries: 0, route: `cloud fallback: ${why}` };
    } catch (error) {
      log.push({ ...attempt, endedAt: Date.now(), end: ctx.signal.aborted ? 'cancelled' : 'error', code: 'CLOUD_FALLBACK_FAILED', tokens: 0 });
      this.logger.warn({ err: error, requestId: ctx.requestId }, 'cloud fallback failed');
      throw this.wrap(new GatewayError(502, 'cloud_fallback_failed', `no device could serve and the cloud fallback failed: ${error instanceof Error ? error.message : String(error)}`), begun);
    }
  }
}

/** How an attempt ended, for the request record. */
function attemptEnd(failure: AttemptFailure): AttemptEnd {
  switch (failure.code) {
    case ErrorCode.DEVICE_OFFLINE:
      return 'offline';
    case ErrorCode.CANCELLED:
      return 'cancelled';
    case ErrorCode.DEADLINE_EXCEEDED:
      return 'timeout';
    default:
      return failure.message === FIRST_TOKEN_MISSED ? 'timeout' : 'error';
  }
}

/** 400 before any device is involved when the estimated prompt plus max_tokens exceed the model's context. */
function checkContext(chat: NormalizedChat, model: RoutedModel): void {
  if (model.contextLength === null) return;
  const prompt = estimatePromptTokens(chat);
  const needed = prompt + (chat.maxTokens ?? 0);
  if (needed > model.contextLength) {
    throw new GatewayError(
      400,
      'context_length_exceeded',
      `This model's maximum context length is ${model.contextLength} tokens. However, you requested about ${needed} tokens (~${prompt} in the messages, ${chat.maxTokens ?? 0} in the completion). Please reduce the length of the messages or completion.`,
      {},
      'messages',
    );
  }
}

function toGatewayError(error: unknown): GatewayError {
  if (error instanceof GatewayError) return error;
  if (error instanceof AppError) {
    if (error.code === ErrorCode.NO_DEVICE_AVAILABLE) return new GatewayError(503, 'no_device_available', error.message, error.headers ?? { 'retry-after': '1' });
    if (error.code === ErrorCode.CANCELLED) return new GatewayError(499, 'cancelled', error.message);
    return new GatewayError(error.status, error.code.toLowerCase(), error.message, error.headers ?? {});
  }
  return new GatewayError(500, 'internal_error', 'internal error');
}

function failureToError(f: AttemptFailure): GatewayError {
  switch (f.code) {
    case ErrorCode.CONTEXT_LENGTH_EXCEEDED:
      return new GatewayError(400, 'context_length_exceeded', f.message, {}, 'messages');
    case ErrorCode.INVALID_REQUEST:
    case ErrorCode.INVALID_MESSAGE:
      return new GatewayError(400, 'invalid_request_error', f.message);
    case ErrorCode.DEADLINE_EXCEEDED:
      return new GatewayError(504, 'timeout', 'the request did not finish before its deadline');
    case ErrorCode.CANCELLED:
      return new GatewayError(499, 'cancelled', f.message);
    default:
      return new GatewayError(502, f.code.toLowerCase(), f.message);
  }
}

/** Affinity for clients that send no `user`: the same leading messages (system + first user turn). */
function conversationKey(chat: NormalizedChat): string | undefined {
  const firstUser = chat.messages.findIndex((m) => m.role === 'user');
  if (firstUser < 0 || chat.messages.length < 2) return undefined; // a single-turn request has no conversation to keep
  const lead = chat.messages.slice(0, firstUser + 1).map((m) => `${m.role}:${m.content ?? ''}`).join('\u0000');
  return `m:${fnv1a(lead)}`;
}

function sessionKeyOf(user: string): string {
  return `u-${fnv1a(user)}`;
}

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}
