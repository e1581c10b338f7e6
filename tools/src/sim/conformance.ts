import type { Packet } from 'mqtt-packet';
import { decodeTopic, parseTopic, type TopicKind } from '@flotilla/protocol';
import type { TappedPacket } from './tcp-proxy.js';

/**
 * Periodic traffic: left out of the ordered sequence (its timing differs from run to run) and summarised instead.
 * Telemetry and the outbox acks answering it come every interval; keepalive pings whenever a link is idle; PUBACKs
 * answer every QoS 1 publish.
 */
const PERIODIC_KINDS: ReadonlySet<TopicKind> = new Set(['telemetry', 'outboxAck']);

export interface NormalisedRecording {
  /** device -> control plane, in order, consecutive repeats collapsed into one */
  sent: string[];
  /** control plane -> device, in order, consecutive repeats collapsed */
  received: string[];
  /** periodic traffic by token (telemetry, outbox acks, pings, PUBACKs), as counts */
  periodic: Record<string, number>;
  /** problems found in the recording itself (a QoS 1 publish never PUBACKed, a broken prevSeq chain) */
  problems: string[];
}

/**
 * Turns the packets one device exchanged through a recording proxy into comparable tokens: packet type, topic kind
 * (the device id is replaced by the kind, so two devices compare), QoS, retain flag and the few payload fields that
 * say what happened (status state, model states); repeats of the same token in a row are collapsed into one, and periodic traffic is counted apart (see PERIODIC_KINDS).
 */
export function normaliseRecording(packets: readonly TappedPacket[]): NormalisedRecording {
  const sent: string[] = [];
  const received: string[] = [];
  const periodic: Record<string, number> = {};
  const problems: string[] = [];
  const unackedBySender = { 'client-to-server': new Set<number>(), 'server-to-client': new Set<number>() };
  let lastSeq = 0;
  for (const { direction, packet } of packets) {
    const token = tokenOf(packet);
    const arrow = direction === 'client-to-server' ? '>' : '<';
    if (packet.cmd === 'publish' && packet.qos === 1 && packet.messageId !== undefined) unackedBySender[direction].add(packet.messageId);
    if (packet.cmd === 'puback' && packet.messageId !== undefined) {
      unackedBySender[direction === 'client-to-server' ? 'server-to-client' : 'client-to-server'].delete(packet.messageId);
    }
    if (packet.cmd === 'publish' && direction === 'client-to-server') {
      const decoded = decodeTopic(packet.topic, packet.payload);
      if (decoded.ok && decoded.value.kind === 'telemetry') {
        const { seq, prevSeq } = decoded.value.value;
        // Entries go in seq order; a resend starts again at or below what was sent.
        if (seq <= lastSeq && prevSeq === undefined) problems.push(`telemetry seq ${seq} after ${lastSeq} without prevSeq`);
        lastSeq = Math.max(lastSeq, seq);
      }
    }
    if (token.periodic) {
      const key = `${arrow} ${token.text}`;
      periodic[key] = (periodic[key] ?? 0) + 1;
      continue;
    }
    (direction === 'client-to-server' ? sent : received).push(token.text);
  }
  // What the device sent last may still be in flight when the recording stops; everything the CP sent must be acked.
  if (unackedBySender['server-to-client'].size > 0) problems.push(`${unackedBySender['server-to-client'].size} QoS 1 publishes to the device never PUBACKed`);
  return { sent: collapse(sent), received: collapse(received), periodic, problems };
}

function tokenOf(packet: Packet): { text: string; periodic: boolean } {
  switch (packet.cmd) {
    case 'connect': {
      const will = packet.will ? ` will=${parseTopic(packet.will.topic)?.kind ?? '?'}:q${packet.will.qos ?? 0}:r${packet.will.retain ? 1 : 0}` : ' will=none';
      return {
        text: `CONNECT v${packet.protocolVersion ?? 4} clean=${String(packet.clean)} keepalive=${packet.keepalive ?? 0}${will} user=${packet.username ? 'yes' : 'no'} password=${packet.password ? 'yes' : 'no'}`,
        periodic: false,
      };
    }
    case 'connack':
      return { text: `CONNACK rc=${packet.returnCode ?? 0}`, periodic: false };
    case 'subscribe':
      return { text: `SUBSCRIBE ${packet.subscriptions.map((s) => `${parseTopic(s.topic)?.kind ?? s.topic}:q${s.qos}`).sort().join(',')}`, periodic: false };
    case 'suback':
      return { text: `SUBACK ${(packet.granted as unknown[]).map(String).join(',')}`, periodic: false };
    case 'publish': {
      const kind = parseTopic(packet.topic)?.kind;
      const flags = `q${packet.qos} r${packet.retain ? 1 : 0}`;
      if (!kind) return { text: `PUBLISH ${packet.topic} ${flags}`, periodic: false };
      return { text: `PUBLISH ${kind} ${flags}${detail(packet.topic, packet.payload)}`, periodic: PERIODIC_KINDS.has(kind) };
    }
    case 'puback':
      return { text: 'PUBACK', periodic: true };
    case 'pingreq':
      return { text: 'PINGREQ', periodic: true };
    case 'pingresp':
      return { text: 'PINGRESP', periodic: true };
    default:
      return { text: packet.cmd.toUpperCase(), periodic: false };
  }
}

/** The payload fields that tell what a message said (not when or with which ids). */
function detail(topic: string, payload: string | Buffer): string {
  if (payload.length === 0) return ' (empty)';
  const decoded = decodeTopic(topic, payload);
  if (!decoded.ok) return ` INVALID(${decoded.error.code})`;
  const message = decoded.value;
  switch (message.kind) {
    case 'status':
      return ` ${message.value.state}${message.value.reason ? `/${message.value.reason}` : ''}`;
    case 'modelState':
      return ` [${message.value.models.map((m) => (m.state === 'ready' ? `ready${m.loaded ? '+loaded' : ''}` : m.state)).join(',')}]`;
    case 'desired':
      return ` models=${message.value.models.length}`;
    case 'inferenceResponse':
      return ` ${message.value.type}`;
    default:
      return '';
  }
}

/**
 * `a, a, a, b` -> `a, b`: consecutive repeats of one token count once, since how many there are depends on timing
 * (download progress reports, a status sent again after a resend), not on the protocol.
 */
export function collapse(tokens: readonly string[]): string[] {
  return tokens.filter((token, i) => token !== tokens[i - 1]);
}

/**
 * A line diff of two token sequences (longest common subsequence): `  same`, `- only in a`, `+ only in b`.
 * Empty when they are equal.
 */
export function diffSequences(a: readonly string[], b: readonly string[], labels: [string, string] = ['a', 'b']): string {
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      const row = lcs[i] as number[];
      row[j] = a[i] === b[j] ? (lcs[i + 1]?.[j + 1] ?? 0) + 1 : Math.max(lcs[i + 1]?.[j] ?? 0, row[j + 1] ?? 0);
    }
  }
  const lines: string[] = [];
  let i = 0;
  let j = 0;
  let differs = false;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      lines.push(`  ${a[i]}`);
      i++;
      j++;
    } else if (j < m && (i >= n || (lcs[i]?.[j + 1] ?? 0) >= (lcs[i + 1]?.[j] ?? 0))) {
      lines.push(`+ ${b[j]}   (only ${labels[1]})`);
      j++;
      differs = true;
    } else {
      lines.push(`- ${a[i]}   (only ${labels[0]})`);
      i++;
      differs = true;
    }
  }
  return differs ? lines.join('\n') : '';
}
