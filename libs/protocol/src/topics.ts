import { TOPIC_KINDS, TOPIC_SPECS, type TopicKind } from './messages.js';
import { DEVICE_ID_PATTERN } from './schemas/common.js';
import { TOPIC_PREFIX } from './version.js';

/** `flotilla/v1/devices`: all device traffic lives under the device's own subtree. [P-2.1] */
export const DEVICES_PREFIX = `${TOPIC_PREFIX}/devices` as const;

export function isValidDeviceId(deviceId: string): boolean {
  return DEVICE_ID_PATTERN.test(deviceId);
}

function assertDeviceId(deviceId: string): void {
  // [P-2.1] a device id never contains `/`, `+` or `#`, so it cannot escape its subtree or act as a wildcard
  if (!isValidDeviceId(deviceId)) {
    throw new RangeError(`invalid device id ${JSON.stringify(deviceId.slice(0, 80))}: expected ${DEVICE_ID_PATTERN.source}`);
  }
}

/** The topic of `kind` for one device. Throws RangeError on an invalid device id. */
export function topicFor(kind: TopicKind, deviceId: string): string {
  assertDeviceId(deviceId);
  return `${DEVICES_PREFIX}/${deviceId}/${TOPIC_SPECS[kind].path}`;
}

type TopicBuilders = { readonly [K in TopicKind]: (deviceId: string) => string };

/**
 * [P-2.2] Topic builders: `topics.telemetry('dev-1')`, subscription filters for every device:
 * `topics.allDevices.telemetry` (= `flotilla/v1/devices/+/telemetry`), and a device's whole subtree.
 */
export const topics: TopicBuilders & {
  readonly allDevices: { readonly [K in TopicKind]: string };
  readonly deviceSubtree: (deviceId: string) => string;
} = {
  ...(Object.fromEntries(TOPIC_KINDS.map((k) => [k, (deviceId: string) => topicFor(k, deviceId)])) as unknown as TopicBuilders),
  allDevices: Object.fromEntries(TOPIC_KINDS.map((k) => [k, `${DEVICES_PREFIX}/+/${TOPIC_SPECS[k].path}`])) as {
    [K in TopicKind]: string;
  },
  deviceSubtree: (deviceId: string) => {
    assertDeviceId(deviceId);
    return `${DEVICES_PREFIX}/${deviceId}/#`;
  },
};

const KIND_BY_PATH: ReadonlyMap<string, TopicKind> = new Map(TOPIC_KINDS.map((k) => [TOPIC_SPECS[k].path, k]));

export interface ParsedTopic {
  deviceId: string;
  kind: TopicKind;
}

/** `flotilla/v1/devices/dev-1/telemetry` -> `{ deviceId: 'dev-1', kind: 'telemetry' }`; null for any other topic. [P-2.2] */
export function parseTopic(topic: string): ParsedTopic | null {
  if (!topic.startsWith(`${DEVICES_PREFIX}/`)) return null;
  const rest = topic.slice(DEVICES_PREFIX.length + 1);
  const slash = rest.indexOf('/');
  if (slash < 0) return null;
  const deviceId = rest.slice(0, slash);
  const kind = KIND_BY_PATH.get(rest.slice(slash + 1));
  if (kind === undefined || !isValidDeviceId(deviceId)) return null;
  return { deviceId, kind };
}

/** [P-2.3] The exact topic filters an agent subscribes to (everything the control plane sends it). */
export function agentSubscriptions(deviceId: string): string[] {
  return TOPIC_KINDS.filter((k) => TOPIC_SPECS[k].direction === 'cp-to-agent').map((k) => topicFor(k, deviceId));
}

/**
 * [P-2.3] Broker ACL for a device's own credentials: it may publish only agent-to-cp topics of its own subtree and
 * subscribe only to the exact cp-to-agent topics of its own subtree (no wildcards).
 */
export function deviceMayAccess(deviceId: string, action: 'publish' | 'subscribe', topic: string): boolean {
  const parsed = parseTopic(topic);
  if (parsed === null || parsed.deviceId !== deviceId) return false;
  const direction = TOPIC_SPECS[parsed.kind].direction;
  return action === 'publish' ? direction === 'agent-to-cp' : direction === 'cp-to-agent';
}
