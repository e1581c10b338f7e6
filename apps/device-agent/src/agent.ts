import { mkdir } from 'node:fs/promises';
import { freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import {
  isRetryable,
  ModelNameSchema,
  PROTOCOL_VERSION,
  encode,
  type Command,
  type DesiredState as ProtocolDesiredState,
  type ErrorCode,
  type InferenceCancel,
  type InferenceRequest,
  type LatencyStats,
  type OutboxAck,
  type MessageOf,
  type ModelStatus as ProtocolModelStatus,
  type ProtocolError,
  type TopicKind,
} from '@flotilla/protocol';
import { LocalApi } from './api/local-api.js';
import type { AgentConfig } from './config/config.js';
import { DeltaCoalescer } from './inference/delta-coalescer.js';
import { InferenceService, type UsageFields } from './inference/service.js';
import { CpuMeter, detectHardware, diskOf } from './inventory.js';
import { ControlPlaneClock } from './link/control-plane-clock.js';
import { MqttLink, type Credentials } from './link/mqtt-link.js';
import type { Logger } from './logger.js';
import { Outbox, type OutboxKind } from './outbox/outbox.js';
import { Reconciler } from './reconciler/reconciler.js';
import type { DesiredState, ModelStatus } from './reconciler/types.js';
import { InferenceFailure, type InferenceEngine } from './runtime/engine.js';
import { LlamaEngine } from './runtime/llama-engine.js';
import { PacedEngine } from './runtime/paced-engine.js';
import { Runtime } from './runtime/runtime.js';
import { ModelStore } from './store/model-store.js';

export const AGENT_VERSION = '0.1.0';

export type AgentOptions = {
  config: AgentConfig;
  credentials: Credentials;
  logger: Logger;
  /** Defaults to node-llama-cpp; injectable to keep the engine replaceable. */
  engine?: InferenceEngine;
};

/** Wires the store, runtime, reconciler, outbox, local API and MQTT link of one device. */
export class Agent {
  private readonly cpu = new CpuMeter();
  private readonly seenCommands = new Set<string>();
  /** Jobs of the control plane by `jobKey` (requestId + attempt) [P-3.6]. */
  private readonly activeRequests = new Set<string>();
  /** Requests that arrived before this connection's clock sync, by jobKey: judged once the hello is answered. */
  private readonly parked = new Map<string, { request: InferenceRequest; receivedAt: number }>();
  /** Set when the control plane did not answer this connection's hello in time (an older one): see onHelloUnanswered. */
  private helloUnanswered = false;
  private helloAnswerTimer: NodeJS.Timeout | undefined;
  private readonly clock = new ControlPlaneClock();
  /** Text buffered for streamed requests, by jobKey: flushed on cancel and before the terminal message. */
  private readonly streams = new Map<string, DeltaCoalescer>();
  private readonly since = new Map<string, { phase: string; since: number }>();
  private readonly progress = new Map<string, ModelStatus>();
  private telemetryTimer: NodeJS.Timeout | undefined;
  private readonly reconcilerAbort = new AbortController();
  private reconcilerRun: Promise<void> | undefined;
  /** Highest outbox seq handed to the current connection. */
  private sentSeq: number;
  private flushing = false;
  private draining = false;
  /** [P-3.1] hello goes first on every connection: nothing else is sent before it. */
  private helloSent = false;
  private stopping: Promise<void> | undefined;
  private localAddress: { host: string; port: number } | undefined;

  private constructor(
    private readonly options: AgentOptions,
    private readonly engine: InferenceEngine,
    private readonly store: ModelStore,
    private readonly outbox: Outbox,
    private readonly runtime: Runtime,
    private readonly reconciler: Reconciler,
    private readonly service: InferenceService,
    private readonly localApi: LocalApi | undefined,
    private readonly link: MqttLink,
  ) {
    this.sentSeq = outbox.ackedUpTo;
  }

  static async create(options: AgentOptions): Promise<Agent> {
    const { config, logger } = options;
    await mkdir(config.dataDir, { recursive: true });
    const store = new ModelStore({ dir: config.modelsDir, logger: logger.child({ component: 'store' }) });
    await store.init();
    const outbox = new Outbox({ dir: join(config.dataDir, 'outbox'), maxBytes: config.outbox.maxBytes, logger: logger.child({ component: 'outbox' }) });
    await outbox.open();
    const baseEngine = options.engine ?? (await LlamaEngine.create({ gpu: config.gpu, threads: config.threads, logger }));
    // Test seam: paced like a slow device, so an end-to-end test can act between two chunks of a stream.
    const gapMs = config.streaming.testTokenGapMs;
    if (gapMs > 0) logger.warn({ gapMs }, 'test seam: streamed text is paced (streaming.testTokenGapMs)');
    const engine = gapMs > 0 ? new PacedEngine(baseEngine, gapMs) : baseEngine;

    // Late-bound: the runtime and reconciler call back into each other through the agent.
    const ref: { current?: Agent } = {};
    const runtime = new Runtime({
      engine,
      logger: logger.child({ component: 'runtime' }),
      memoryBudgetBytes: config.memoryBudget,
      maxParallelRequests: config.maxParallelRequests,
      maxQueuedRequests: config.maxQueuedRequests,
      idleUnloadMs: config.idleUnloadSeconds * 1000,
      defaultContextSize: config.contextSize,
      defaultParallel: config.maxParallelRequests,
      onModelsChanged: () => ref.current?.reconciler.wake(),
      onModelUsed: (sha256) => void store.touch(sha256).catch((error: unknown) => logger.warn({ err: error }, 'could not record model use')),
      stopTimeoutMs: config.shutdownGraceSeconds * 1000,
      event: (level, code, message, model) => ref.current?.event(level, code, message, model ? { model } : {}),
    });
    const reconciler = new Reconciler({
      store,
      runtime,
      logger: logger.child({ component: 'reconciler' }),
      policy: { maxAttempts: config.download.maxAttempts, baseDelayMs: config.download.retryBaseMs, maxDelayMs: 5 * 60_000 },
      diskQuotaBytes: config.diskQuota,
      memoryBudgetBytes: config.memoryBudget,
      report: (version, statuses) => ref.current?.reportModels(version, statuses),
      progress: (version, status) => ref.current?.reportProgress(version, status),
      event: (level, code, message, model) => ref.current?.event(level, code, message, model ? { model } : {}),
    });
    const service = new InferenceService(runtime, (usage) => ref.current?.recordUsage(usage));
    const localApi = config.localApi.enabled
      ? new LocalApi({ host: config.localApi.bind.host, port: config.localApi.bind.port, service, logger: logger.child({ component: 'local-api' }) })
      : undefined;
    const link = new MqttLink({
      credentials: options.credentials,
      ...(config.mqtt.url ? { url: config.mqtt.url } : {}),
      ...(config.mqtt.tls ? { tls: config.mqtt.tls } : {}),
      keepaliveSeconds: config.mqtt.keepaliveSeconds,
      reconnectMinMs: config.mqtt.reconnectMinMs,
      reconnectMaxMs: config.mqtt.reconnectMaxMs,
      failoverAfterAttempts: config.mqtt.failoverAfterAttempts,
      agentVersion: AGENT_VERSION,
      logger: logger.child({ component: 'mqtt' }),
      handlers: {
        desired: (message) => ref.current?.onDesired(message),
        inferenceRequest: (message) => ref.current?.onInferenceRequest(message),
        inferenceCancel: (message) => ref.current?.onInferenceCancel(message),
        command: (message) => ref.current?.handleCommand(message),
        outboxAck: (message) => {
          ref.current?.onClockAck(message);
          ref.current?.onOutboxAck(message);
        },
      },
      onConnected: (sessionId) => ref.current?.onConnected(sessionId) ?? Promise.resolve(),
      onDisconnected: () => ref.current?.onDisconnected(),
      onMalformed: (kind, topic, error) => ref.current?.onMalformed(kind, topic, error),
    });
    const agent = new Agent(options, engine, store, outbox, runtime, reconciler, service, localApi, link);
    ref.current = agent;
    return agent;
  }

  get localApiAddress(): { host: string; port: number } | undefined {
    return this.localAddress;
  }

  get deviceId(): string {
    return this.options.credentials.deviceId;
  }

  async start(): Promise<void> {
    if (this.localApi) this.localAddress = await this.localApi.start();
    this.reconcilerRun = this.reconciler.run(this.reconcilerAbort.signal);
    this.telemetryTimer = setInterval(() => {
      // A failed sample (e.g. the disk cannot be read) skips one tick; the next one tries again.
      this.sampleTelemetry().catch((error: unknown) => this.options.logger.warn({ err: error }, 'telemetry sample failed'));
    }, this.options.config.telemetryIntervalSeconds * 1000);
    this.link.start();
    this.options.logger.info({ version: AGENT_VERSION, localApi: this.localAddress }, 'agent started');
  }

  /** SIGTERM: stop taking jobs, let running ones finish within the grace period (then cancel), publish offline. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const graceMs = this.options.config.shutdownGraceSeconds * 1000;
    this.options.logger.info({ graceMs }, 'draining');
    this.draining = true;
    if (this.link.connected) await this.publishStatus('draining', 'shutdown').catch(() => undefined);
    // Leave a moment at the end for the last results and the offline status.
    await this.runtime.drain(Math.max(0, graceMs - 1500));
    clearInterval(this.telemetryTimer);
    this.reconcilerAbort.abort();
    await this.reconcilerRun;
    await this.link.stop();
    await this.localApi?.stop();
    await this.outbox.close();
    await this.runtime.dispose();
    await this.engine.dispose();
    this.options.logger.info('stopped');
  }

  /**
   * [P-1.6][P-4.3] Everything the control plane has not acknowledged goes again, in order, on the next connection.
   * A PUBACK is not storage [P-4.2]: the broker acknowledges before the control plane commits, and a control plane
   * that dies in between never stores what it PUBACKed.
   */
  private onDisconnected(): void {
    this.helloSent = false;
    clearTimeout(this.helloAnswerTimer);
    this.resendFromAck();
  }

  /** [P-4.2] The control plane stored everything up to upToSeq; `resend` asks for every later entry again [P-4.3]. */
  private onOutboxAck(message: MessageOf<'outboxAck'>): void {
    const resend = (): void => {
      if (message.resend !== true) return;
      this.resendFromAck();
      this.flushOutbox();
    };
    this.outbox.ack(message.upToSeq).then(resend, (error: unknown) => {
      // Only the ack file is behind: those entries may be sent once more after a restart, never lost.
      this.options.logger.error({ err: error, upToSeq: message.upToSeq }, 'outbox ack not recorded');
      resend();
    });
  }

  private resendFromAck(): void {
    this.sentSeq = this.outbox.ackedUpTo;
  }

  private async onConnected(sessionId: string): Promise<void> {
    this.clock.connected(sessionId);
    this.helloUnanswered = false;
    clearTimeout(this.helloAnswerTimer);
    await this.sendHello(sessionId);
    this.helloAnswerTimer = setTimeout(() => this.onHelloUnanswered(), this.options.config.mqtt.helloAnswerTimeoutSeconds * 1000);
    this.helloAnswerTimer.unref();
    await this.publishStatus(this.draining ? 'draining' : 'online', 'startup');
    this.helloSent = true;
    const statuses = this.reconciler.statuses();
    if (statuses.length > 0 || this.reconciler.desiredVersion() > 0) this.reportModels(this.reconciler.desiredVersion(), statuses);
    this.flushOutbox();
  }

  private async sendHello(sessionId: string): Promise<void> {
    const hardware = await detectHardware(this.options.config.modelsDir, () => this.engine.gpus());
    this.clock.helloSent();
    await this.link.publish('hello', {
      v: PROTOCOL_VERSION,
      ts: Date.now(),
      sessionId,
      agentVersion: AGENT_VERSION,
      hardware,
      runtimes: [this.engine.runtimeInfo],
      models: this.store
        .verifiedFiles()
        .map((file) => ({ ...(ModelNameSchema.safeParse(file.name).success ? { name: file.name } : {}), fileName: file.fileName, sha256: file.sha256, sizeBytes: file.sizeBytes })),
      outbox: { lastSeq: this.outbox.highestSeq },
      labels: this.options.config.labels,
    });
  }

  private publishStatus(state: 'online' | 'draining', reason: 'startup' | 'drain' | 'shutdown'): Promise<void> {
    return this.link.publish('status', { v: PROTOCOL_VERSION, state, sessionId: this.link.currentSessionId, ts: Date.now(), reason, agentVersion: AGENT_VERSION });
  }

  private onDesired(message: ProtocolDesiredState): void {
    const desired: DesiredState = {
      version: message.version,
      models: message.models.map((model) => ({
        name: model.name,
        source: model.url,
        sha256: model.sha256,
        sizeBytes: model.sizeBytes,
        pinned: model.pinned,
        load: model.loaded,
        contextSize: model.contextSize,
        parallel: model.parallel,
      })),
    };
    const { limits } = message;
    const accepted = this.reconciler.offer(desired, {
      ...(limits.diskQuotaBytes === undefined ? {} : { diskQuotaBytes: limits.diskQuotaBytes }),
      ...(limits.maxMemoryBytes === undefined ? {} : { memoryBudgetBytes: limits.maxMemoryBytes }),
    });
    if (!accepted) {
      this.options.logger.debug({ version: message.version, applied: this.reconciler.desiredVersion() }, 'ignoring a desired state that is not newer');
      return;
    }
    const config = this.options.config;
    // The local config is the box's hard limit; the control plane may only tighten it.
    this.runtime.setLimits({
      maxParallelRequests: Math.min(config.maxParallelRequests, limits.maxParallelRequests),
      maxQueuedRequests: Math.min(config.maxQueuedRequests, limits.maxQueueLength),
      idleUnloadMs: limits.idleUnloadMs ?? config.idleUnloadSeconds * 1000,
      memoryBudgetBytes: Math.min(config.memoryBudget, limits.maxMemoryBytes ?? Infinity),
    });
    this.options.logger.info({ version: message.version, models: message.models.length }, 'desired state accepted');
  }

  private onInferenceRequest(request: InferenceRequest): void {
    const key = jobKey(request.requestId, request.attempt);
    // [P-3.6] a QoS 1 redelivery of an attempt already running; a new attempt of the same request is a new job.
    if (this.activeRequests.has(key) || this.parked.has(key)) return;
    const receivedAt = Date.now();
    if (this.clock.synced || this.helloUnanswered) return this.runRequest(request, receivedAt);
    // Until the control plane answered this connection's hello, neither its clock nor whether the broker queued this
    // request for an earlier connection is known: hold it for that one round trip.
    if (this.parked.size >= PARKED_LIMIT) return this.respondError(request, 'QUEUE_FULL', `${PARKED_LIMIT} requests wait for the control plane's hello answer`);
    this.parked.set(key, { request, receivedAt });
  }

  /**
   * A control plane that never answers the hello with its sessionId (one older than this agent) must not leave jobs
   * parked forever: past the timeout they run as before the clock sync existed, with the budget deadline - sentAt
   * counted from their arrival.
   */
  private onHelloUnanswered(): void {
    if (this.clock.synced || !this.link.connected) return;
    this.helloUnanswered = true;
    this.options.logger.warn({ timeoutSeconds: this.options.config.mqtt.helloAnswerTimeoutSeconds, parked: this.parked.size }, 'the control plane did not answer the hello; running requests without its clock');
    this.runParked();
  }

  private runParked(): void {
    const waiting = [...this.parked.values()];
    this.parked.clear();
    for (const { request, receivedAt } of waiting) this.runRequest(request, receivedAt);
  }

  /** [P-3.6] The ack that answers this connection's hello: the clock is known, parked requests are judged now. */
  private onClockAck(ack: OutboxAck): void {
    if (!this.clock.ack(ack)) return;
    clearTimeout(this.helloAnswerTimer);
    this.runParked();
  }

  private respondError(request: InferenceRequest, code: ErrorCode, message: string): void {
    const { requestId, attempt } = request;
    this.link
      .publish('inferenceResponse', { v: PROTOCOL_VERSION, type: 'error', requestId, attempt, code, message: message.slice(0, 2048), retryable: isRetryable(code) })
      .catch((error: unknown) => this.options.logger.warn({ err: error, requestId, attempt }, 'response not sent'));
  }

  private runRequest(request: InferenceRequest, receivedAt: number): void {
    const { requestId, attempt } = request;
    const key = jobKey(requestId, attempt);
    const respond = (message: MessageOf<'inferenceResponse'>): void => {
      this.link.publish('inferenceResponse', message).catch((error: unknown) => this.options.logger.warn({ err: error, requestId, attempt }, 'response not sent'));
    };
    const fail = (code: ErrorCode, message: string): void => this.respondError(request, code, message);
    if (this.draining) return fail('DEVICE_DRAINING', 'the device is shutting down');
    const localDeadline = this.clock.toLocal(request.deadline) ?? receivedAt + Math.max(0, request.deadline - request.sentAt);
    if (localDeadline <= Date.now()) return fail('DEADLINE_EXCEEDED', 'the deadline passed before the request arrived');
    if (this.clock.sentBeforeConnection(request.sentAt)) {
      // The persistent session held it while the link was down; the gateway failed it over when the device went
      // offline (and a cancel follows it). Running it now would only burn the device on an answer nobody reads.
      this.options.logger.info({ requestId, attempt, sentAt: request.sentAt }, 'dropped a request queued before this connection');
      return fail('DEVICE_OFFLINE', 'the request was queued while the device was offline');
    }
    this.activeRequests.add(key);
    let seq = 0;
    const continuation = request.continuation?.content;
    // [P-3.7] chunks carry one or more tokens' text; seq stays contiguous because only the coalescer emits text.
    const stream = request.stream
      ? new DeltaCoalescer({
          ...this.options.config.streaming,
          emit: (text, tokens, ids) =>
            respond({ v: PROTOCOL_VERSION, type: 'chunk', requestId, attempt, seq: seq++, tokens, ...(ids ? { tokenIds: [...ids] } : {}), delta: { content: text } }),
        })
      : undefined;
    if (stream) this.streams.set(key, stream);
    this.service
      .complete(
        {
          requestId,
          jobId: key,
          model: request.model,
          priority: request.priority,
          // [P-3.6] the absolute deadline on our clock, through the offset measured at this connection's hello.
          deadline: localDeadline,
          request: {
            messages: request.messages,
            ...(request.tools ? { tools: request.tools } : {}),
            ...(request.toolChoice ? { toolChoice: request.toolChoice } : {}),
            ...(request.responseFormat ? { responseFormat: request.responseFormat } : {}),
            ...(request.maxTokens === undefined ? {} : { maxTokens: request.maxTokens }),
            ...(request.temperature === undefined ? {} : { temperature: request.temperature }),
            ...(request.topP === undefined ? {} : { topP: request.topP }),
            ...(request.seed === undefined ? {} : { seed: request.seed }),
            ...(request.stop ? { stop: request.stop } : {}),
            ...(continuation ? { continuation } : {}),
            ...(continuation && request.continuation?.tokens ? { continuationTokens: request.continuation.tokens } : {}),
          },
          ...(stream ? { onTextDelta: (text: string, tokens: number, ids?: readonly number[]) => stream.push(text, tokens, ids) } : {}),
        },
        'control-plane',
      )
      .then((result) => {
        // Buffered text goes before the tool-call chunk and the result; tool calls get a chunk of their own.
        stream?.close();
        const toolCalls = result.toolCalls.map((call, index) => ({ id: `call_${request.requestId}_${index}`.slice(0, 128), type: 'function' as const, function: call }));
        if (request.stream && toolCalls.length > 0) {
          respond({
            v: PROTOCOL_VERSION,
            type: 'chunk',
            requestId,
            attempt,
            seq: seq++,
            delta: { toolCalls: toolCalls.map((call, index) => ({ index, id: call.id, type: 'function', function: { name: call.function.name, arguments: call.function.arguments } })) },
          });
        }
        const content = result.content === null ? (continuation ?? null) : `${continuation ?? ''}${result.content}`;
        respond({
          v: PROTOCOL_VERSION,
          type: 'result',
          requestId,
          attempt,
          finishReason: result.finishReason,
          message: { role: 'assistant', content, ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}) },
          usage: { promptTokens: result.promptTokens, completionTokens: result.completionTokens },
          timings: { ttftMs: result.ttftMs ?? result.totalMs, totalMs: result.totalMs },
          chunkCount: seq,
        });
      })
      .catch((error: unknown) => {
        stream?.close();
        const failure = error instanceof InferenceFailure ? error : new InferenceFailure('INTERNAL', String(error));
        fail(failure.code, failure.message);
      })
      .finally(() => {
        this.activeRequests.delete(key);
        if (this.streams.get(key) === stream) this.streams.delete(key);
      });
  }

  /** [P-3.8] What was generated before the cancel goes out now; the CANCELLED error follows once generation stops. */
  private onInferenceCancel(cancel: InferenceCancel): void {
    const key = jobKey(cancel.requestId, cancel.attempt);
    const parked = this.parked.get(key);
    if (parked) {
      this.parked.delete(key);
      return this.respondError(parked.request, 'CANCELLED', 'cancelled before it started');
    }
    this.streams.get(key)?.flush();
    this.service.cancel(key);
  }

  private handleCommand(command: Command): void {
    this.onCommand(command).catch((error: unknown) => this.options.logger.error({ err: error, commandId: command.commandId }, 'command failed'));
  }

  private async onCommand(command: Command): Promise<void> {
    if (this.seenCommands.has(command.commandId)) return;
    this.seenCommands.add(command.commandId);
    if (this.seenCommands.size > 1000) this.seenCommands.delete(this.seenCommands.values().next().value as string);
    const ack = (status: 'accepted' | 'completed' | 'rejected' | 'failed', code?: ErrorCode, message?: string): Promise<void> =>
      this.link
        .publish('commandAck', { v: PROTOCOL_VERSION, commandId: command.commandId, status, ts: Date.now(), ...(code ? { code } : {}), ...(message ? { message: message.slice(0, 2048) } : {}) })
        .catch(() => undefined);
    if (command.expiresAt !== undefined && command.expiresAt < Date.now()) return ack('rejected', 'DEADLINE_EXCEEDED', 'the command expired before it arrived');
    try {
      switch (command.kind) {
        case 'drain':
          await ack('accepted');
          this.draining = true;
          await this.publishStatus('draining', 'drain');
          await this.runtime.drain(command.args.timeoutMs ?? this.options.config.shutdownGraceSeconds * 1000);
          return ack('completed');
        case 'resume':
          this.draining = false;
          this.runtime.resume();
          await this.publishStatus('online', 'drain');
          return ack('completed');
        case 'refresh-inventory':
          await this.sendHello(this.link.currentSessionId);
          return ack('completed');
        case 'unload-model':
          if (!this.runtime.isRegistered(command.args.model)) return ack('rejected', 'MODEL_NOT_FOUND', `model ${command.args.model} is not on this device`);
          try {
            await this.runtime.unload(command.args.model, { forget: false });
          } catch (error) {
            // Still held and counted by the runtime: the reconciler, woken below, plans the unload again.
            return ack('failed', 'INTERNAL', `unloading ${command.args.model} failed: ${error instanceof Error ? error.message : String(error)}`);
          } finally {
            this.reconciler.wake();
          }
          return ack('completed');
        case 'delete-model': {
          if (this.reconciler.statuses().some((status) => status.name === command.args.model)) {
            return ack('rejected', 'CONFLICT', `model ${command.args.model} is desired; remove it from the desired state instead`);
          }
          const files = this.store.verifiedFiles().filter((file) => file.name === command.args.model);
          if (files.length === 0) return ack('rejected', 'MODEL_NOT_FOUND', `no file for model ${command.args.model}`);
          const failed: string[] = [];
          for (const file of files) {
            // A file that cannot be removed stays in the store, counted and marked: the reconciler evicts it again.
            await this.store.evict(file.sha256).catch((error: unknown) => failed.push(`${file.sha256}: ${error instanceof Error ? error.message : String(error)}`));
          }
          this.reconciler.wake();
          if (failed.length > 0) return ack('failed', 'INTERNAL', `could not delete ${failed.length} of ${files.length} files (retrying): ${failed.join('; ')}`);
          return ack('completed');
        }
        case 'resend-outbox':
          this.resendFromAck();
          this.flushOutbox();
          return ack('completed');
      }
    } catch (error) {
      return ack('failed', 'INTERNAL', error instanceof Error ? error.message : String(error));
    }
  }

  private onMalformed(kind: TopicKind | 'unknown', topic: string, error: ProtocolError): void {
    this.options.logger.warn({ topic, code: error.code, problem: error.message }, 'rejected an inbound message');
    this.event('warn', error.code, `${kind}: ${error.message}`.slice(0, 2048), { details: { topic: topic.slice(0, 256), issues: error.issues.slice(0, 10) } });
  }

  private reportModels(version: number, statuses: readonly ModelStatus[]): void {
    for (const status of statuses) this.progress.delete(status.name);
    this.publishModelState(version, statuses);
  }

  private reportProgress(version: number, status: ModelStatus): void {
    this.progress.set(status.name, status);
    this.publishModelState(version, this.reconciler.statuses());
  }

  private publishModelState(version: number, statuses: readonly ModelStatus[]): void {
    if (!this.link.connected || !this.helloSent) return; // retained snapshot: the next connect sends the current one
    const now = Date.now();
    const models = statuses.map((status) => toProtocolStatus(this.progress.get(status.name) ?? status, version, this.sinceOf(status, now)));
    this.link.publish('modelState', { v: PROTOCOL_VERSION, ts: now, desiredVersion: this.reconciler.desiredVersion(), models }).catch((error: unknown) => {
      this.options.logger.warn({ err: error }, 'model state not sent');
    });
  }

  private sinceOf(status: ModelStatus, now: number): number {
    const known = this.since.get(status.name);
    if (known && known.phase === status.phase) return known.since;
    this.since.set(status.name, { phase: status.phase, since: now });
    return now;
  }

  private event(level: 'debug' | 'info' | 'warn' | 'error', code: string, message: string, extra: { model?: string; details?: Record<string, unknown> } = {}): void {
    const safeCode = /^[A-Z][A-Z0-9_]{1,63}$/.test(code) ? code : 'INTERNAL';
    this.enqueueInBackground('event', (seq) => ({ v: PROTOCOL_VERSION, seq, ts: Date.now(), level, code: safeCode, message: message.slice(0, 2048), ...extra }));
  }

  private recordUsage(usage: UsageFields): void {
    this.enqueueInBackground('usage', (seq) => ({ v: PROTOCOL_VERSION, seq, ts: Date.now(), ...usage }));
  }

  private async sampleTelemetry(): Promise<void> {
    const window = this.runtime.takeWindow();
    const counts = this.runtime.counts();
    const [gpus, disk] = await Promise.all([this.engine.gpus().catch(() => []), diskOf(this.options.config.modelsDir)]);
    const total = totalmem();
    const free = freemem();
    await this.enqueue('telemetry', (seq) => ({
      v: PROTOCOL_VERSION,
      seq,
      ts: Date.now(),
      windowMs: window.windowMs,
      cpu: { percent: this.cpu.percent() },
      memory: { usedBytes: total - free, totalBytes: total },
      gpus: gpus.map((gpu, index) => ({ index, vramUsedBytes: Math.max(0, gpu.vramBytes - (gpu.vramFreeBytes ?? 0)), vramTotalBytes: gpu.vramBytes })),
      disk: { freeBytes: disk.freeBytes, modelsBytes: this.store.usedBytes() },
      loadedModels: this.runtime.loadedModels().map((model) => ({
        name: model.name,
        contextSize: model.contextSize,
        parallel: model.parallel,
        activeRequests: model.activeRequests,
        memoryBytes: model.memoryBytes,
        lastUsedAt: model.lastUsedAt,
      })),
      inference: {
        activeRequests: counts.active,
        queuedRequests: counts.queued,
        completedRequests: window.completedRequests,
        failedRequests: window.failedRequests,
        generatedTokens: window.generatedTokens,
        tokensPerSecond: window.tokensPerSecond,
        ...(window.ttftMs.length > 0 ? { ttftMs: stats(window.ttftMs) } : {}),
        ...(window.latencyMs.length > 0 ? { latencyMs: stats(window.latencyMs) } : {}),
      },
      draining: this.draining,
    }));
  }

  /** Validates with the protocol schema, stores on disk, then sends when connected. */
  private enqueueInBackground(kind: OutboxKind, build: (seq: number) => Record<string, unknown>): void {
    this.enqueue(kind, build).catch((error: unknown) => this.options.logger.error({ err: error, kind }, 'outbox entry not stored'));
  }

  private async enqueue(kind: OutboxKind, build: (seq: number) => Record<string, unknown>): Promise<void> {
    try {
      await this.outbox.append(kind, (seq) => JSON.parse(encode(kind, build(seq) as MessageOf<typeof kind>)) as Record<string, unknown>);
    } catch (error) {
      this.options.logger.error({ err: error, kind }, 'outbox entry rejected');
      return;
    }
    this.flushOutbox();
  }

  /**
   * Sends entries after the last one handed to this connection, in seq order, each with the seq of the entry held
   * before it (`prevSeq`, [P-4.3]). Each connection uses a fresh mqtt.js client; after a reconnect everything after
   * the control plane's ack is sent again (see onDisconnected). The PUBACK is not waited for: order and storage come
   * from the outbox ack, so one rejected publish is only logged.
   */
  private flushOutbox(): void {
    if (this.flushing || !this.link.connected || !this.helloSent) return;
    this.flushing = true;
    try {
      for (const entry of this.outbox.pending(this.sentSeq)) {
        if (!this.link.connected) break;
        this.link
          .publishRaw(entry.kind, JSON.stringify({ ...entry.payload, prevSeq: entry.prevSeq }))
          .catch((error: unknown) => this.options.logger.debug({ err: error, seq: entry.seq }, 'outbox entry not acknowledged by the broker'));
        this.sentSeq = entry.seq;
      }
    } finally {
      this.flushing = false;
    }
  }
}

/** Requests held at most while a connection waits for its hello answer. */
const PARKED_LIMIT = 1000;

/** The agent's key for a control-plane job: one per (requestId, attempt) [P-3.6]. */
function jobKey(requestId: string, attempt: number): string {
  return `${requestId}#${attempt}`;
}

function toProtocolStatus(status: ModelStatus, version: number, since: number): ProtocolModelStatus {
  const base = { name: status.name, sha256: status.sha256, desiredVersion: version, since };
  switch (status.phase) {
    case 'pending':
    case 'verifying':
    case 'loading':
      return { ...base, state: status.phase };
    case 'downloading':
      return { ...base, state: 'downloading', receivedBytes: status.receivedBytes ?? 0, totalBytes: status.totalBytes ?? status.receivedBytes ?? 0 };
    case 'ready':
      return { ...base, state: 'ready', loaded: status.loaded === true };
    case 'failed':
      return { ...base, state: 'failed', code: status.code ?? 'INTERNAL', message: (status.reason ?? 'failed').slice(0, 2048) };
  }
}

function stats(values: number[]): LatencyStats {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  return { avg: sorted.reduce((sum, value) => sum + value, 0) / sorted.length, p50: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] ?? 0 };
}
