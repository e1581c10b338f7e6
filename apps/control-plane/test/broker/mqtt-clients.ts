import { connect as connectTcp, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';

/** What became of one raw CONNECT: a CONNACK (with its return code), or the socket closed, failed or timed out first. */
export type ConnectOutcome = { kind: 'connack'; returnCode: number; ms: number; socket: Socket } | { kind: 'closed' | 'error' | 'timeout'; detail: string; ms: number };

export interface RawConnect {
  port: number;
  /** source address, e.g. 127.20.0.1 (a simulated fleet spreads over 127.0.0.0/8) */
  localAddress?: string;
  clientId: string;
  password: string;
  /** how long the client waits for its CONNACK before giving up, as mqtt.js does (10 s in the agent) */
  timeoutMs?: number;
}

/** One light MQTT client (mqtt-packet over a TCP socket), `clean: false` as the agent connects; the socket stays open. */
export function rawConnect({ port, localAddress = '127.0.0.1', clientId, password, timeoutMs = 10_000 }: RawConnect, sockets: Socket[]): Promise<ConnectOutcome> {
  const startedAt = Date.now();
  return new Promise((resolve) => {
    const socket = connectTcp({ port, host: '127.0.0.1', localAddress, noDelay: true });
    sockets.push(socket);
    let settled = false;
    const settle = (outcome: ConnectOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => settle({ kind: 'timeout', detail: `no CONNACK in ${timeoutMs} ms`, ms: Date.now() - startedAt }), timeoutMs);
    const parser = mqttPacket.parser();
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connack') settle({ kind: 'connack', returnCode: packet.returnCode ?? -1, ms: Date.now() - startedAt, socket });
    });
    socket.on('data', (data: Buffer) => parser.parse(data));
    socket.on('error', (error: Error) => settle({ kind: 'error', detail: error.message, ms: Date.now() - startedAt }));
    socket.on('close', () => settle({ kind: 'closed', detail: 'closed before CONNACK', ms: Date.now() - startedAt }));
    socket.once('connect', () => {
      socket.write(
        mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, clientId, username: clientId, password: Buffer.from(password), keepalive: 60 }),
      );
    });
  });
}

/** Counts by outcome and the spread of times, for assertion messages. */
export function summarizeOutcomes(outcomes: ConnectOutcome[]): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    const key = o.kind === 'connack' ? `connack ${o.returnCode}` : `${o.kind}: ${o.detail}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const times = outcomes.map((o) => o.ms).sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))] ?? 0;
  return `${[...counts].map(([k, n]) => `${n} x ${k}`).join('; ')}; time to outcome p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`;
}

export const failedConnects = (outcomes: ConnectOutcome[]) => outcomes.filter((o) => o.kind !== 'connack' || o.returnCode !== 0).length;
