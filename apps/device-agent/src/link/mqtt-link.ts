import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { decode, encode, lastWill, parseTopic, PROTOCOL_VERSION, topicFor, TOPIC_SPECS, agentSubscriptions, type MessageOf, type ProtocolError, type TopicKind } from '@flotilla/protocol';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import type { Logger } from '../logger.js';

export type Credentials = { deviceId: string; username: string; password: string; urls: readonly string[] };

export type TlsOptions = { caFile?: string; certFile?: string; keyFile?: string; rejectUnauthorized: boolean };

type InboundKind = 'desired' | 'inferenceRequest' | 'inferenceCancel' | 'command' | 'outboxAck';
export type InboundHandlers = { [K in InboundKind]: (message: MessageOf<K>) => void };

export type MqttLinkOptions = {
  credentials: Credentials;
  /** Overrides the enrolled broker URLs. */
  url?: string;
  tls?: TlsOptions;
  keepaliveSeconds: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** Failed connection attempts in a row on one broker URL before the next enrolled URL is tried (default 3). */
  failoverAfterAttempts?: number;
  agentVersion: string;
  logger: Logger;
  handlers: InboundHandlers;
  /** After every (re)connect: send hello, status, state, replay the outbox. */
  onConnected: (sessionId: string) => Promise<void>;
  onDisconnected?: () => void;
  /** A payload that failed to decode: reported as an event, the link keeps running. */
  onMalformed: (kind: TopicKind | 'unknown', topic: string, error: ProtocolError) => void;
  random?: () => number;
};

/**
 * Jittered exponential backoff: a uniform delay in [min/2, min(max, min * 2^(attempt+1))]. The first attempt is
 * jittered too (over [250, 1000] ms with the defaults): when a control plane restarts, every device loses its
 * connection at the same instant, and a window that starts at `min` for all of them brought the whole fleet back in one
 * wave (the window used to be [min, min] on attempt 0). The floor of min/2 keeps a dropped device from retrying in a
 * tight loop.
 */
export function reconnectDelay(attempt: number, minMs: number, maxMs: number, random: number): number {
  const floor = minMs / 2;
  const ceiling = Math.max(floor, Math.min(maxMs, minMs * 2 ** Math.min(attempt + 1, 20)));
  return Math.round(floor + (ceiling - floor) * random);
}

/**
 * The broker URL to dial: the link stays on one URL while it works and moves to the next (wrapping around) after
 * `failoverAfter` failed connection attempts in a row. A connection that was up and then dropped is not a failure.
 */
export class BrokerUrls {
  private index = 0;
  private failures = 0;

  constructor(
    private readonly urls: readonly string[],
    private readonly failoverAfter: number,
  ) {
    if (urls.length === 0) throw new Error('no MQTT URL: enroll first or set mqtt.url');
    if (!Number.isInteger(failoverAfter) || failoverAfter < 1) throw new Error('failoverAfter must be a positive integer');
  }

  get current(): string {
    return this.urls[this.index] as string;
  }

  connected(): void {
    this.failures = 0;
  }

  /** Records a failed attempt on the current URL; true when the link moved on to another URL. */
  failed(): boolean {
    this.failures++;
    if (this.failures < this.failoverAfter || this.urls.length < 2) return false;
    this.index = (this.index + 1) % this.urls.length;
    this.failures = 0;
    return true;
  }
}

/**
 * The device's MQTT connection: persistent session (clean: false, client id = device id), QoS 1, a retained
 * last will marking this session offline, TCP_NODELAY, jittered exponential reconnects, and failover to the next
 * enrolled broker URL (`mqtt://`, `ws://.../mqtt`, ...) after repeated failed attempts.
 */
export class MqttLink {
  private client: MqttClient | undefined;
  private sessionId = randomUUID();
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly random: () => number;
  private readonly urls: BrokerUrls;

  constructor(private readonly options: MqttLinkOptions) {
    this.random = options.random ?? Math.random;
    this.urls = new BrokerUrls(options.url ? [options.url] : options.credentials.urls, options.failoverAfterAttempts ?? 3);
  }

  /** The broker URL in use, or dialled next. */
  get currentUrl(): string {
    return this.urls.current;
  }

  get deviceId(): string {
    return this.options.credentials.deviceId;
  }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  get currentSessionId(): string {
    return this.sessionId;
  }

  start(): void {
    this.stopped = false;
    this.connectClient();
  }

  /**
   * One mqtt.js client per connection attempt: a fresh client has no in-flight store of its own, so what was not
   * acknowledged on the previous connection is re-sent by the caller (the outbox), in order, exactly once.
   */
  private connectClient(): void {
    const url = this.urls.current;
    const tls = this.options.tls;
    const clientOptions: IClientOptions = {
      clientId: this.deviceId,
      username: this.options.credentials.username,
      password: this.options.credentials.password,
      // Persistent session: the broker keeps subscriptions and QoS 1 messages for the device while it is away.
      clean: false,
      protocolVersion: 4,
      keepalive: this.options.keepaliveSeconds,
      // Reconnects are scheduled here, with jitter.
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      will: this.will(),
      ...(tls?.caFile ? { ca: readFileSync(tls.caFile) } : {}),
      ...(tls?.certFile ? { cert: readFileSync(tls.certFile) } : {}),
      ...(tls?.keyFile ? { key: readFileSync(tls.keyFile) } : {}),
      ...(tls ? { rejectUnauthorized: tls.rejectUnauthorized } : {}),
    };
    const client = connect(url, clientOptions);
    this.client = client;
    let established = false;
    client.on('connect', () => {
      // mqtt.js leaves Nagle on: ~44 ms per QoS 1 round trip instead of ~0.2 ms (FACTS).
      (client.stream as Partial<Socket>).setNoDelay?.(true);
      established = true;
      this.attempt = 0;
      this.urls.connected();
      this.options.logger.info({ url, sessionId: this.sessionId }, 'connected to the broker');
      client.subscribe(agentSubscriptions(this.deviceId), { qos: 1 }, (error) => {
        if (error) this.options.logger.error({ err: error }, 'subscribe failed');
      });
      this.options.onConnected(this.sessionId).catch((error: unknown) => this.options.logger.error({ err: error }, 'post-connect work failed'));
    });
    client.on('message', (topic, payload) => this.dispatch(topic, payload));
    client.on('close', () => {
      if (this.client !== client) return;
      this.options.onDisconnected?.();
      client.removeAllListeners('close');
      client.end(true);
      // Only attempts that never got a CONNACK count towards failover: a dropped connection retries its URL first.
      if (!established && this.urls.failed()) this.options.logger.warn({ from: url, to: this.urls.current }, 'broker unreachable, trying the next URL');
      this.scheduleReconnect();
    });
    client.on('error', (error) => this.options.logger.warn({ err: error.message }, 'MQTT error'));
  }

  /** Publishes a validated message (QoS and retained flag from the protocol's topic table). */
  publish<K extends TopicKind>(kind: K, message: MessageOf<K>): Promise<void> {
    return this.publishRaw(kind, encode(kind, message));
  }

  /** Publishes an already-encoded payload (outbox replay). */
  publishRaw(kind: TopicKind, payload: string): Promise<void> {
    const client = this.client;
    if (!client) return Promise.reject(new Error('not started'));
    const spec = TOPIC_SPECS[kind];
    return new Promise((resolve, reject) => {
      client.publish(topicFor(kind, this.deviceId), payload, { qos: spec.qos, retain: spec.retained }, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Publishes offline (retained) when connected, then closes without triggering the last will. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    if (!client) return;
    if (client.connected) {
      await Promise.race([
        this.publish('status', { v: PROTOCOL_VERSION, state: 'offline', sessionId: this.sessionId, ts: Date.now(), reason: 'shutdown', agentVersion: this.options.agentVersion }),
        new Promise((resolve) => setTimeout(resolve, 2000)),
      ]).catch(() => undefined);
    }
    // Give in-flight messages a moment to be acknowledged, then close for good.
    await Promise.race([new Promise<void>((resolve) => client.end(false, {}, () => resolve())), new Promise((resolve) => setTimeout(resolve, 2000))]);
    client.end(true);
  }

  private will(): NonNullable<IClientOptions['will']> {
    const will = lastWill(this.deviceId, this.sessionId, Date.now(), this.options.agentVersion);
    return { topic: will.topic, payload: Buffer.from(will.payload), qos: will.qos, retain: will.retain };
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = reconnectDelay(this.attempt++, this.options.reconnectMinMs, this.options.reconnectMaxMs, this.random());
    this.options.logger.info({ delayMs: delay, attempt: this.attempt }, 'reconnecting');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stopped) return;
      // A new session id per connection; its last will names it so a stale will cannot mark a newer session offline.
      this.sessionId = randomUUID();
      this.connectClient();
    }, delay);
  }

  private dispatch(topic: string, payload: Buffer): void {
    // An empty retained payload clears a retained message: nothing to apply.
    if (payload.length === 0) return;
    const parsed = parseTopic(topic);
    if (!parsed || parsed.deviceId !== this.deviceId || TOPIC_SPECS[parsed.kind].direction !== 'cp-to-agent') {
      this.options.onMalformed('unknown', topic, { code: 'UNKNOWN_TOPIC', message: `unexpected topic ${topic}`, issues: [] });
      return;
    }
    const kind = parsed.kind as InboundKind;
    const decoded = decode(kind, payload);
    if (!decoded.ok) {
      this.options.onMalformed(kind, topic, decoded.error);
      return;
    }
    try {
      (this.options.handlers[kind] as (message: MessageOf<InboundKind>) => void)(decoded.value);
    } catch (error) {
      this.options.logger.error({ err: error, kind }, 'handler failed');
    }
  }
}
