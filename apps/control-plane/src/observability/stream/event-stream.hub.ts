import { Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import type { StreamEvent } from '@flotilla/protocol';
import { FleetEvents, type FleetEvent } from '../../platform/events/fleet-events.js';
import { MetricsRegistry } from '../../platform/metrics/metrics-registry.js';
import type { SseConnection } from '../../platform/sse/sse-connection.js';
import { STREAM_SETTINGS, type StreamSettings } from './stream.settings.js';

interface Subscriber {
  connection: SseConnection;
  types: ReadonlySet<string> | undefined;
}

/** Events kept for replay to a client that reconnects with Last-Event-ID. */
const REPLAY_EVENTS = 1000;

/**
 * Fans FleetEvents out to every open event stream. Ids are `<boot>.<seq>`: a client reconnecting with an id of this
 * process gets what it missed from a small ring; an id from another process (restart) or older than the ring gets a
 * `resync` event, telling it to reload state over REST.
 */
@Injectable()
export class EventStreamHub implements OnModuleDestroy {
  private readonly boot = Date.now().toString(36);
  private seq = 0;
  private readonly recent: StreamEvent[] = [];
  private readonly subscribers = new Set<Subscriber>();
  private readonly off: () => void;
  private readonly clients;
  private readonly delivered;

  constructor(
    events: FleetEvents,
    metrics: MetricsRegistry,
    @Inject(STREAM_SETTINGS) readonly settings: StreamSettings,
  ) {
    this.clients = metrics.gauge({ name: 'flotilla_event_stream_clients', help: 'Open event streams (SSE) to dashboards.' });
    this.clients.set(undefined, 0);
    this.delivered = metrics.counter({ name: 'flotilla_event_stream_events_total', help: 'Fleet events written to event streams.' });
    this.off = events.onAny((event) => this.publish(event));
  }

  get size(): number {
    return this.subscribers.size;
  }

  /** Adds a stream; replays what it missed since `lastEventId` (or asks it to resync). */
  attach(connection: SseConnection, options: { types?: ReadonlySet<string>; lastEventId?: string } = {}): void {
    const subscriber: Subscriber = { connection, types: options.types };
    if (options.lastEventId) {
      const missed = this.since(options.lastEventId);
      if (missed === undefined) connection.send({ event: 'resync', data: { reason: 'events since the last id are no longer available' } });
      else for (const event of missed) this.deliver(subscriber, event);
    }
    this.subscribers.add(subscriber);
    this.clients.set(undefined, this.subscribers.size);
    connection.onClose(() => {
      this.subscribers.delete(subscriber);
      this.clients.set(undefined, this.subscribers.size);
    });
  }

  /** The id of the latest event (for a stream's first message). */
  get lastId(): string | undefined {
    return this.recent.at(-1)?.id;
  }

  onModuleDestroy(): void {
    this.off();
    // Open streams would hold the HTTP server open on shutdown: end them (clients reconnect to the next process).
    for (const subscriber of [...this.subscribers]) subscriber.connection.close();
  }

  private publish(event: FleetEvent): void {
    // What a dashboard receives for each fleet event (StreamEventSchema).
    const entry: StreamEvent = { id: `${this.boot}.${++this.seq}`, ...event, at: new Date().toISOString() };
    this.recent.push(entry);
    if (this.recent.length > REPLAY_EVENTS) this.recent.shift();
    for (const subscriber of this.subscribers) this.deliver(subscriber, entry);
  }

  private deliver(subscriber: Subscriber, event: StreamEvent): void {
    if (subscriber.types && !subscriber.types.has(event.type)) return;
    subscriber.connection.send({ id: event.id, event: event.type, data: event });
    this.delivered.inc();
  }

  /** Events after `id`, or undefined when they cannot be known. */
  private since(id: string): StreamEvent[] | undefined {
    const [boot, seqText] = id.split('.');
    const seq = Number(seqText);
    if (boot !== this.boot || !Number.isInteger(seq) || seq > this.seq) return undefined;
    if (seq === this.seq) return [];
    const first = this.recent[0];
    if (!first || Number(first.id.split('.')[1]) > seq + 1) return undefined;
    return this.recent.filter((e) => Number(e.id.split('.')[1]) > seq);
  }
}
