import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { decode, parseTopic, PROTOCOL_VERSION, topics, type MessageOf } from '@flotilla/protocol';
import type { Logger } from 'pino';
import { BROKER, LOGGER } from '../../platform/tokens.js';
import type { BrokerMessage, EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import { FleetEvents } from '../../platform/events/fleet-events.js';
import { DeviceQueue } from './device-queue.js';
import { INGESTED_KINDS, IngestStats, type IngestedKind } from './ingest-stats.js';
import { DeviceLivenessService } from './liveness.service.js';
import { ModelStateService } from './model-state.service.js';
import { OutboxIngestService } from './outbox-ingest.service.js';

/** At most one warning per device in this interval for malformed payloads (the counters count every one). */
const MALFORMED_LOG_INTERVAL_MS = 10_000;

/**
 * The control plane's MQTT entry point for device traffic: subscribes to every device's agent -> CP topics, decodes
 * every payload with the protocol codec [P-1.1] (a rejected one is logged with the device id, counted and dropped,
 * never acted on) and hands messages to the registry in per-device order.
 */
@Injectable()
export class MqttIngestService implements OnModuleInit, OnModuleDestroy {
  private readonly unsubscribes: (() => Promise<void>)[] = [];
  private readonly lastMalformedLog = new Map<string, number>();

  constructor(
    @Inject(BROKER) private readonly broker: EmbeddedBroker,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly stats: IngestStats,
    private readonly queue: DeviceQueue,
    private readonly liveness: DeviceLivenessService,
    private readonly outbox: OutboxIngestService,
    private readonly modelStates: ModelStateService,
    private readonly events: FleetEvents,
  ) {}

  async onModuleInit(): Promise<void> {
    for (const kind of INGESTED_KINDS) {
      this.unsubscribes.push(await this.broker.subscribe(topics.allDevices[kind], (message) => this.receive(kind, message)));
    }
  }

  async onModuleDestroy(): Promise<void> {
    const unsubscribes = this.unsubscribes.splice(0);
    if (!this.broker.closed) await Promise.all(unsubscribes.map((unsubscribe) => unsubscribe()));
    await this.queue.idle();
  }

  /** One message from the broker; synchronous apart from the work it queues. */
  receive(kind: IngestedKind, message: BrokerMessage): void {
    this.stats.received[kind] += 1;
    const deviceId = parseTopic(message.topic)?.deviceId;
    if (deviceId === undefined) return; // the subscription filters only match device topics
    // [P-1.1] an empty payload clears a retained topic: nothing retained, not an error
    if (message.payload.length === 0 && (kind === 'status' || kind === 'modelState')) return;
    const decoded = decode(kind, message.payload);
    if (!decoded.ok) {
      this.stats.countMalformed(kind, decoded.error.code);
      this.logMalformed(deviceId, message.topic, decoded.error.code, decoded.error.message);
      if (kind === 'telemetry' || kind === 'event' || kind === 'usage') this.rejectEntry(deviceId, kind, message.payload, decoded.error);
      return;
    }
    this.dispatch(deviceId, kind, decoded.value, Date.now());
  }

  /**
   * [P-4.3] An outbox entry this process cannot decode (an agent newer than the control plane, say) would otherwise
   * hold back every later entry of its device, which waits for it: when its seq is readable it is stored as an error
   * event in its place, so the cursor moves on and the operator sees what was refused.
   */
  private rejectEntry(deviceId: string, kind: 'telemetry' | 'event' | 'usage', payload: Buffer, error: { code: string; message: string }): void {
    const position = outboxPosition(payload);
    if (!position) return; // without a seq it cannot be placed: nothing waits on it by seq either
    const receivedAt = Date.now();
    const value: MessageOf<'event'> = {
      v: PROTOCOL_VERSION,
      seq: position.seq,
      ...(position.prevSeq === undefined ? {} : { prevSeq: position.prevSeq }),
      ts: receivedAt,
      level: 'error',
      code: 'OUTBOX_ENTRY_REJECTED',
      message: `${kind} entry ${position.seq} rejected: ${error.code}: ${error.message}`.slice(0, 2048),
      details: { kind, code: error.code },
    };
    this.queue.post(deviceId, 'event', () => this.outbox.accept(deviceId, { kind: 'event', seq: value.seq, value, receivedAt }), () => {
      this.stats.handlerErrors += 1;
    });
  }

  private dispatch(deviceId: string, kind: IngestedKind, value: MessageOf<IngestedKind>, receivedAt: number): void {
    const failed = () => {
      this.stats.handlerErrors += 1;
    };
    switch (kind) {
      case 'hello':
        this.queue.post(deviceId, 'hello', () => this.liveness.hello(deviceId, value as MessageOf<'hello'>, receivedAt), failed);
        return;
      case 'status':
        this.queue.post(deviceId, 'status', () => this.liveness.status(deviceId, value as MessageOf<'status'>, receivedAt), failed);
        return;
      case 'modelState':
        this.queue.post(deviceId, 'model state', () => this.modelStates.report(deviceId, value as MessageOf<'modelState'>), failed);
        return;
      case 'telemetry': {
        const entry = value as MessageOf<'telemetry'>;
        this.queue.post(deviceId, 'telemetry', () => this.outbox.accept(deviceId, { kind, seq: entry.seq, value: entry, receivedAt }), failed);
        return;
      }
      case 'event': {
        const entry = value as MessageOf<'event'>;
        this.queue.post(deviceId, 'event', () => this.outbox.accept(deviceId, { kind, seq: entry.seq, value: entry, receivedAt }), failed);
        return;
      }
      case 'usage': {
        const entry = value as MessageOf<'usage'>;
        this.queue.post(deviceId, 'usage', () => this.outbox.accept(deviceId, { kind, seq: entry.seq, value: entry, receivedAt }), failed);
        return;
      }
      case 'commandAck': {
        const ack = value as MessageOf<'commandAck'>;
        this.events.emit('command.ack', {
          deviceId,
          commandId: ack.commandId,
          status: ack.status,
          code: ack.code ?? null,
          message: ack.message ?? null,
        });
        return;
      }
    }
  }

  private logMalformed(deviceId: string, topic: string, code: string, message: string): void {
    const now = Date.now();
    const last = this.lastMalformedLog.get(deviceId) ?? 0;
    const fields = { deviceId, topic, code, problem: message };
    if (now - last >= MALFORMED_LOG_INTERVAL_MS) {
      this.lastMalformedLog.set(deviceId, now);
      this.logger.warn(fields, 'malformed MQTT payload dropped');
    } else {
      this.logger.debug(fields, 'malformed MQTT payload dropped');
    }
  }
}

/** The seq (and prevSeq) of an outbox payload that failed validation, when its JSON still says them plainly. */
function outboxPosition(payload: Buffer): { seq: number; prevSeq: number | undefined } | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { seq, prevSeq } = parsed as { seq?: unknown; prevSeq?: unknown };
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return undefined;
  const prev = typeof prevSeq === 'number' && Number.isSafeInteger(prevSeq) && prevSeq >= 0 && prevSeq < seq ? prevSeq : undefined;
  return { seq, prevSeq: prev };
}
