import { Duplex } from 'node:stream';
import type { Logger } from 'pino';

/** The limits a guarded MQTT connection is held to, from its first byte. */
export interface MqttGuardLimits {
  /** largest remaining length of any packet once the client is authenticated */
  maxPacketBytes: number;
  /** bytes a client may send before it is authenticated (its CONNECT included) */
  maxUnauthenticatedBytes: number;
}

/** Why a connection was cut; `declared` is the remaining length its fixed header claimed, when that was the reason. */
export interface MqttGuardViolation {
  reason: 'first-packet-not-connect' | 'packet-too-large' | 'too-much-before-authentication' | 'malformed-length';
  declared?: number;
}

const CONNECT = 1;

/**
 * Follows MQTT 3.1.1 framing on a byte stream without buffering it: the fixed header is one type byte and a remaining
 * length of 1-4 bytes (7 bits each, [MQTT-2.2.3]), then that many bytes of body are skipped. aedes' parser (mqtt-packet)
 * buffers a whole packet before looking at it, so a header claiming 200 MiB would be held in memory in full; the scanner
 * sees the claim as soon as its header bytes arrive.
 */
export class MqttFrameScanner {
  private state: 'type' | 'length' | 'body' = 'type';
  private type = 0;
  private length = 0;
  private lengthBytes = 0;
  private bodyLeft = 0;
  private packets = 0;
  private unauthenticatedBytes = 0;
  private authenticated = false;
  private connectDone = false;

  constructor(private readonly limits: MqttGuardLimits) {}

  /** Whether the first packet (the CONNECT) has arrived in full: from then on the client waits on the server. */
  get connectReceived(): boolean {
    return this.connectDone;
  }

  /** From now on the packet cap is the authenticated one and the pre-authentication byte budget no longer applies. */
  markAuthenticated(): void {
    this.authenticated = true;
  }

  /** Scans the next bytes of the stream; returns the first violation, if any (the caller then drops the connection). */
  feed(chunk: Buffer): MqttGuardViolation | undefined {
    if (!this.authenticated) {
      this.unauthenticatedBytes += chunk.length;
      if (this.unauthenticatedBytes > this.limits.maxUnauthenticatedBytes) return { reason: 'too-much-before-authentication' };
    }
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'body') {
        const skip = Math.min(this.bodyLeft, chunk.length - i);
        this.bodyLeft -= skip;
        i += skip;
        if (this.bodyLeft === 0) this.packetDone();
        continue;
      }
      const byte = chunk[i++] as number;
      if (this.state === 'type') {
        this.type = byte >> 4;
        this.length = 0;
        this.lengthBytes = 0;
        this.state = 'length';
        continue;
      }
      this.length += (byte & 0x7f) * 128 ** this.lengthBytes;
      this.lengthBytes++;
      if (byte & 0x80) {
        if (this.lengthBytes === 4) return { reason: 'malformed-length' };
        continue;
      }
      const violation = this.headerDone();
      if (violation) return violation;
    }
    return undefined;
  }

  private headerDone(): MqttGuardViolation | undefined {
    // [MQTT-3.1.0-1] the first packet is a CONNECT; aedes would only find out after buffering the whole packet.
    if (this.packets === 0 && this.type !== CONNECT) return { reason: 'first-packet-not-connect', declared: this.length };
    this.packets++;
    const cap = this.authenticated ? this.limits.maxPacketBytes : this.limits.maxUnauthenticatedBytes;
    if (this.length > cap) return { reason: this.authenticated ? 'packet-too-large' : 'too-much-before-authentication', declared: this.length };
    this.bodyLeft = this.length;
    if (this.length > 0) this.state = 'body';
    else this.packetDone();
    return undefined;
  }

  private packetDone(): void {
    this.state = 'type';
    this.connectDone = true;
  }
}

/**
 * A connection as aedes sees it: the socket's bytes pass through a `MqttFrameScanner` on their way in, and the socket is
 * destroyed at the first violation, before aedes has buffered the offending packet. Writes go straight to the socket.
 */
export class GuardedConnection extends Duplex {
  private readonly scanner: MqttFrameScanner;

  constructor(
    private readonly socket: Duplex,
    limits: MqttGuardLimits,
    private readonly hooks: { onViolation(violation: MqttGuardViolation): void; onConnectReceived(): void; onAuthenticated(): void },
  ) {
    super({ allowHalfOpen: false });
    this.scanner = new MqttFrameScanner(limits);
    socket.on('data', (chunk: Buffer) => {
      const violation = this.scanner.feed(chunk);
      if (violation) {
        socket.pause();
        this.hooks.onViolation(violation);
        this.destroy();
        return;
      }
      if (this.scanner.connectReceived) this.hooks.onConnectReceived();
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (error: Error) => this.destroy(error));
    socket.on('close', () => this.destroy());
  }

  /** Called by the broker once the client's credentials were accepted. */
  markAuthenticated(): void {
    this.scanner.markAuthenticated();
    this.hooks.onAuthenticated();
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.socket.write(chunk)) callback();
    else this.socket.once('drain', () => callback());
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    // mqtt-packet corks while it writes a packet in pieces: hand them to the socket as one write (TCP_NODELAY is on).
    let ok = true;
    for (const { chunk } of chunks) ok = this.socket.write(chunk);
    if (ok) callback();
    else this.socket.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(() => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy();
    callback(error);
  }
}

/**
 * Admits connections: at most `maxPerAddress` at once from one source address that have not yet delivered their whole
 * CONNECT (0: no cap), each wrapped in a `GuardedConnection`. Per exact address, since devices behind one NAT share one
 * and a simulated fleet spreads over 127.0.0.0/8.
 *
 * The cap is on connections that hold a slot without asking anything (the slow-loris kind), not on devices waiting
 * for the server: a device sends its CONNECT in its first packet, so its slot is free within a round trip, and the time
 * its authentication then takes (queued in a storm) no longer counts against its address. Counting until
 * authentication turned a site of devices behind one address, all reconnecting while the server was busy, into
 * refused connections. A client that sent a CONNECT and waits is still held to the pre-authentication byte budget.
 */
export class ConnectionAdmission {
  private readonly pending = new Map<string, number>();

  constructor(
    private readonly limits: MqttGuardLimits,
    private readonly maxPerAddress: number,
    private readonly logger: Logger,
  ) {}

  /** The guarded stream for aedes, or undefined when the address is over its cap (the socket is then destroyed). */
  admit(socket: Duplex, address: string | undefined): GuardedConnection | undefined {
    const key = normalizeAddress(address);
    const count = this.pending.get(key) ?? 0;
    if (this.maxPerAddress > 0 && count >= this.maxPerAddress) {
      this.logger.warn({ address: key, pending: count }, 'MQTT connection refused: too many unauthenticated connections from this address');
      socket.destroy();
      return undefined;
    }
    this.pending.set(key, count + 1);
    let counted = true;
    const release = () => {
      if (!counted) return;
      counted = false;
      const left = (this.pending.get(key) ?? 1) - 1;
      if (left <= 0) this.pending.delete(key);
      else this.pending.set(key, left);
    };
    const guarded = new GuardedConnection(socket, this.limits, {
      onViolation: (violation) => this.logger.warn({ address: key, ...violation }, 'MQTT connection cut before its packet was buffered'),
      onConnectReceived: release,
      onAuthenticated: release,
    });
    guarded.once('close', release);
    return guarded;
  }

  /** Connections now open from `address` whose CONNECT has not arrived yet. */
  pendingFrom(address: string): number {
    return this.pending.get(normalizeAddress(address)) ?? 0;
  }
}

function normalizeAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
