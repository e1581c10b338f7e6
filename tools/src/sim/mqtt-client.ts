import { connect, type Socket } from 'node:net';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';

/** What a light client tells its owner. One handler object per client (the device itself): no per-event closures. */
export interface MqttClientHandler {
  /** CONNACK received; returnCode 0 is accepted */
  onConnack(returnCode: number, sessionPresent: boolean): void;
  /** an inbound PUBLISH (QoS 1 is PUBACKed by the client before this is called) */
  onPublish(topic: string, payload: Buffer, packet: IPublishPacket): void;
  /** PUBACK for one of our QoS 1 publishes */
  onPuback?(messageId: number): void;
  /** SUBACK for a SUBSCRIBE */
  onSuback?(messageId: number, granted: readonly number[]): void;
  /** the socket closed (any reason); `established` when a CONNACK with code 0 was received on it */
  onClose(established: boolean): void;
}

export interface MqttConnectOptions {
  host: string;
  port: number;
  /** source address to dial from (127.x.y.z on loopback) */
  localAddress?: string;
  clientId: string;
  username?: string;
  password?: string;
  keepaliveSeconds: number;
  clean: boolean;
  will?: { topic: string; payload: string; qos: 0 | 1; retain: boolean };
}

export type MqttClientState = 'idle' | 'connecting' | 'connected' | 'closed';

/**
 * A raw MQTT 3.1.1 client on mqtt-packet: CONNECT, SUBSCRIBE, PUBLISH QoS 0/1 (with PUBACK handling both ways),
 * PINGREQ, DISCONNECT, destroy. A few KB per connection (a socket, a parser, a handful of numbers), so one process
 * holds thousands. Keepalive is driven from outside (`keepaliveTick`), from one shared timer for a whole fleet.
 */
export class LightMqttClient {
  state: MqttClientState = 'idle';
  /** Date.now() of the last packet written */
  lastSentAt = 0;
  /** Date.now() of the last PINGREQ */
  pingSentAt = 0;
  /** Date.now() of the last acknowledgement received (keepalive counts from it, as in mqtt.js) */
  ackedAt = 0;
  /** QoS 1 publishes written and not PUBACKed yet on this connection */
  unacked = 0;
  keepaliveMs = 0;
  /** while true nothing is written (a hung device: no PINGREQ, no PUBACK); the socket stays open */
  muted = false;
  private socket: Socket | undefined;
  private established = false;
  private nextMessageId = 1;

  constructor(private readonly handler: MqttClientHandler) {}

  get connected(): boolean {
    return this.state === 'connected';
  }

  /** the local address of the current socket (what the broker sees as the peer) */
  get localAddress(): string | undefined {
    return this.socket?.localAddress;
  }

  get localPort(): number | undefined {
    return this.socket?.localPort;
  }

  connect(options: MqttConnectOptions): void {
    if (this.socket) this.destroy();
    this.muted = false;
    this.state = 'connecting';
    this.established = false;
    this.unacked = 0;
    this.pingSentAt = 0;
    this.nextMessageId = 1;
    this.keepaliveMs = options.keepaliveSeconds * 1000;
    const socket = connect({ host: options.host, port: options.port, noDelay: true, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    this.socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (packet: Packet) => this.onPacket(packet));
    parser.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => undefined);
    socket.once('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.state = 'closed';
      this.handler.onClose(this.established);
    });
    this.write({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clientId: options.clientId,
      clean: options.clean,
      keepalive: options.keepaliveSeconds,
      ...(options.username === undefined ? {} : { username: options.username }),
      ...(options.password === undefined ? {} : { password: Buffer.from(options.password) }),
      ...(options.will ? { will: { topic: options.will.topic, payload: Buffer.from(options.will.payload), qos: options.will.qos, retain: options.will.retain } } : {}),
    });
  }

  /** SUBSCRIBE to topics at one QoS; returns the message id */
  subscribe(topics: readonly string[], qos: 0 | 1): number {
    const messageId = this.messageId();
    this.write({ cmd: 'subscribe', messageId, subscriptions: topics.map((topic) => ({ topic, qos })) });
    return messageId;
  }

  /** PUBLISH; returns the message id for QoS 1, 0 for QoS 0, -1 when not connected (nothing written) */
  publish(topic: string, payload: string | Buffer, qos: 0 | 1, retain: boolean): number {
    if (this.state !== 'connected') return -1;
    const messageId = qos === 1 ? this.messageId() : 0;
    this.write({ cmd: 'publish', topic, payload, qos, retain, dup: false, ...(qos === 1 ? { messageId } : {}) });
    if (qos === 1) this.unacked++;
    return messageId;
  }

  pingreq(now = Date.now()): void {
    this.pingSentAt = now;
    this.write({ cmd: 'pingreq' });
  }

  /**
   * As mqtt.js 5 does: its keepalive clock restarts on every acknowledgement received (CONNACK, PUBACK, SUBACK,
   * PINGRESP), not on sends; after one keepalive period without one it sends PINGREQ, and after 1.5 periods it drops
   * the connection (a dead path is found even while the device keeps publishing). Returns false when it dropped it.
   */
  keepaliveTick(now: number): boolean {
    if (this.state !== 'connected' || this.keepaliveMs === 0) return true;
    const quiet = now - this.ackedAt;
    if (quiet >= this.keepaliveMs * 1.5) {
      this.destroy();
      return false;
    }
    if (quiet >= this.keepaliveMs && this.pingSentAt <= this.ackedAt) this.pingreq(now);
    return true;
  }

  /** DISCONNECT, then close the socket once written (the will is discarded by the broker) */
  disconnect(): void {
    const socket = this.socket;
    if (!socket) return;
    if (this.state === 'connected') this.write({ cmd: 'disconnect' });
    socket.end();
  }

  /** close the socket without a word (the broker fires the will) */
  destroy(): void {
    this.socket?.destroy();
  }

  private messageId(): number {
    const id = this.nextMessageId;
    this.nextMessageId = id >= 65535 ? 1 : id + 1;
    return id;
  }

  private write(packet: Packet): void {
    const socket = this.socket;
    if (!socket || socket.destroyed || this.muted) return;
    socket.write(mqttPacket.generate(packet));
    this.lastSentAt = Date.now();
  }

  private onPacket(packet: Packet): void {
    switch (packet.cmd) {
      case 'connack': {
        const code = packet.returnCode ?? 0;
        if (code === 0) {
          this.state = 'connected';
          this.established = true;
          this.ackedAt = Date.now();
        }
        this.handler.onConnack(code, packet.sessionPresent);
        if (code !== 0) this.destroy();
        return;
      }
      case 'publish':
        if (packet.qos === 1 && packet.messageId !== undefined) this.write({ cmd: 'puback', messageId: packet.messageId });
        this.handler.onPublish(packet.topic, typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload, packet);
        return;
      case 'puback':
        this.ackedAt = Date.now();
        if (this.unacked > 0) this.unacked--;
        this.handler.onPuback?.(packet.messageId ?? 0);
        return;
      case 'suback':
        this.ackedAt = Date.now();
        this.handler.onSuback?.(packet.messageId ?? 0, (packet.granted as unknown[]).map((g) => (typeof g === 'number' ? g : 128)));
        return;
      case 'pingresp':
        this.ackedAt = Date.now();
        return;
      default:
        return;
    }
  }
}

/**
 * Source addresses in 127.0.0.0/8 for simulated devices: device i dials from 127.<base + a>.<b>.<c>, `perAddress`
 * devices per address, so per-address limits apply as for real boxes and ephemeral ports never run out (each address
 * has its own ~28k ports towards one server port). Linux routes all of 127/8 to loopback without configuration.
 */
export function sourceAddress(index: number, perAddress: number, secondOctetBase = 1): string {
  const n = Math.floor(index / Math.max(1, perAddress));
  const c = (n % 254) + 1;
  const b = Math.floor(n / 254) % 256;
  const a = secondOctetBase + Math.floor(n / (254 * 256));
  if (a > 255) throw new RangeError(`source address index ${index} is outside 127.0.0.0/8`);
  return `127.${a}.${b}.${c}`;
}
