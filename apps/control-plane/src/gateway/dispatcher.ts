import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import {
  ErrorCode,
  PROTOCOL_VERSION,
  decodeTopic,
  encode,
  topics,
  type InferenceCancel,
  type InferenceChunk,
  type InferenceRequest,
  type InferenceResult,
} from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, LOGGER } from '../platform/tokens.js';
import type { EmbeddedBroker } from '../platform/broker/embedded-broker.js';

export interface AttemptFailure {
  code: ErrorCode;
  message: string;
  retryable: boolean;
}

/** What one attempt on one device reports, in order: chunks by `seq`, then exactly one result or failure. */
export interface AttemptCallbacks {
  onChunk(chunk: InferenceChunk): void;
  onResult(result: InferenceResult): void;
  onFailure(failure: AttemptFailure): void;
}

export type DispatchRequest = Omit<InferenceRequest, 'v' | 'sentAt'>;

interface ActiveAttempt {
  deviceId: string;
  /** [P-3.6] responses name their attempt: a late answer of an earlier attempt on the same device is not this one's */
  attempt: number;
  nextSeq: number;
  /** chunks that arrived ahead of a missing one */
  early: Map<number, InferenceChunk>;
  callbacks: AttemptCallbacks;
}

/**
 * Sends inference jobs to devices over MQTT and hands their answers back. One wildcard subscription on every
 * device's `inference/responses`, demultiplexed by (requestId, attempt); chunks re-ordered by `seq`, duplicates and
 * answers of an attempt that is no longer the current one dropped [P-3.7].
 */
@Injectable()
export class Dispatcher implements OnModuleInit, OnModuleDestroy {
  private readonly active = new Map<string, ActiveAttempt>();
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
  ) {}

  async onModuleInit(): Promise<void> {
    this.unsubscribe = await this.broker.subscribe(topics.allDevices.inferenceResponse, (m) => this.onResponse(m.topic, m.payload));
  }

  async onModuleDestroy(): Promise<void> {
    await this.unsubscribe?.();
    for (const [requestId, a] of this.active) {
      this.finish(requestId, a);
      a.callbacks.onFailure({ code: ErrorCode.INTERNAL, message: 'the gateway is shutting down', retryable: true });
    }
  }

  get inFlight(): number {
    return this.active.size;
  }

  /** Publishes the job (QoS 1) and registers the callbacks; replaces any earlier attempt of the same request. */
  send(deviceId: string, request: DispatchRequest, callbacks: AttemptCallbacks): void {
    const message: InferenceRequest = { v: PROTOCOL_VERSION, ...request, sentAt: Date.now() };
    this.active.set(request.requestId, { deviceId, attempt: request.attempt, nextSeq: 0, early: new Map(), callbacks });
    let payload: string;
    try {
      payload = encode('inferenceRequest', message);
    } catch (error) {
      this.fail(request.requestId, { code: ErrorCode.INVALID_REQUEST, message: error instanceof Error ? error.message : String(error), retryable: false });
      return;
    }
    this.broker.publish(topics.inferenceRequest(deviceId), payload, { qos: 1 }).catch((error: unknown) => {
      this.logger.warn({ err: error, deviceId, requestId: request.requestId }, 'could not publish an inference request');
      this.fail(request.requestId, { code: ErrorCode.DEVICE_OFFLINE, message: 'could not reach the device', retryable: true }, deviceId);
    });
  }

  /** Ends the current attempt locally (device offline, timer) with a failure; the device's late answers are dropped. */
  fail(requestId: string, failure: AttemptFailure, onlyOnDevice?: string): void {
    const a = this.active.get(requestId);
    if (!a || (onlyOnDevice !== undefined && a.deviceId !== onlyOnDevice)) return;
    this.finish(requestId, a);
    a.callbacks.onFailure(failure);
  }

  /** Stops the job on its device [P-3.8] and forgets it; no callback fires afterwards. */
  cancel(requestId: string, reason: NonNullable<InferenceCancel['reason']>): void {
    const a = this.active.get(requestId);
    if (!a) return;
    this.finish(requestId, a);
    this.publishCancel(requestId, a, reason);
  }

  /**
   * The device went offline: every attempt on it fails (retryable) and gets a cancel. The cancel waits in the
   * device's persistent session behind any job the broker still holds for it, so a job queued while the link was
   * down is stopped when the device returns instead of running after the gateway moved on. [P-3.8]
   */
  abandonDevice(deviceId: string, failure: AttemptFailure): void {
    for (const [requestId, a] of [...this.active]) {
      if (a.deviceId !== deviceId) continue;
      this.finish(requestId, a);
      this.publishCancel(requestId, a, 'failover');
      a.callbacks.onFailure(failure);
    }
  }

  private publishCancel(requestId: string, a: ActiveAttempt, reason: NonNullable<InferenceCancel['reason']>): void {
    const payload = encode('inferenceCancel', { v: PROTOCOL_VERSION, requestId, attempt: a.attempt, reason });
    this.broker.publish(topics.inferenceCancel(a.deviceId), payload, { qos: 1 }).catch((error: unknown) => {
      this.logger.debug({ err: error, deviceId: a.deviceId, requestId, attempt: a.attempt }, 'could not publish a cancel');
    });
  }

  private finish(requestId: string, a: ActiveAttempt): void {
    if (this.active.get(requestId) === a) this.active.delete(requestId);
  }

  private onResponse(topic: string, payload: Buffer): void {
    const decoded = decodeTopic(topic, payload);
    if (!decoded.ok || decoded.value.kind !== 'inferenceResponse') {
      if (!decoded.ok) this.logger.warn({ topic, code: decoded.error.code, message: decoded.error.message }, 'dropped an undecodable inference response');
      return;
    }
    const { deviceId, value } = decoded.value;
    const a = this.active.get(value.requestId);
    // Unknown, finished, or an earlier attempt (failed over, possibly to this same device). [P-3.7]
    if (!a || a.deviceId !== deviceId || a.attempt !== value.attempt) return;
    if (value.type === 'chunk') {
      if (value.seq < a.nextSeq || a.early.has(value.seq)) return; // duplicate
      if (value.seq > a.nextSeq) {
        a.early.set(value.seq, value);
        return;
      }
      this.deliver(a, value);
      for (let next = a.early.get(a.nextSeq); next; next = a.early.get(a.nextSeq)) {
        a.early.delete(next.seq);
        this.deliver(a, next);
      }
      return;
    }
    this.finish(value.requestId, a);
    if (value.type === 'result') {
      // A lost chunk does not hold the answer back: deliver what arrived, in order; the result has the whole text.
      for (const seq of [...a.early.keys()].sort((x, y) => x - y)) {
        const chunk = a.early.get(seq);
        if (chunk) a.callbacks.onChunk(chunk);
      }
      a.callbacks.onResult(value);
    } else {
      a.callbacks.onFailure({ code: value.code, message: value.message, retryable: value.retryable });
    }
  }

  private deliver(a: ActiveAttempt, chunk: InferenceChunk): void {
    a.nextSeq = chunk.seq + 1;
    a.callbacks.onChunk(chunk);
  }
}
