import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { TOPIC_KINDS, TOPIC_SPECS } from './messages.js';
import { agentSubscriptions, deviceMayAccess, isValidDeviceId, parseTopic, topicFor, topics } from './topics.js';

const doc = readFileSync(fileURLToPath(new URL('../../../docs/protocol.md', import.meta.url)), 'utf8');

describe('[P-2.1] device ids', () => {
  it.each(['dev-1', 'kiosk_01', 'a1b', '0' + 'x'.repeat(63)])('[P-2.1] accepts %s', (id) => {
    expect(isValidDeviceId(id)).toBe(true);
    expect(topics.hello(id)).toBe(`flotilla/v1/devices/${id}/hello`);
  });

  it.each(['', 'ab', 'Dev-1', '-dev', 'dev/1', 'dev+', 'dev#', 'dev 1', 'd'.repeat(65), 'dév-1'])('[P-2.1] rejects %j', (id) => {
    expect(isValidDeviceId(id)).toBe(false);
    expect(() => topics.telemetry(id)).toThrow(RangeError);
    expect(() => topics.deviceSubtree(id)).toThrow(RangeError);
  });
});

describe('[P-2.2] topics', () => {
  it('[P-2.2] builds every topic under the device subtree', () => {
    expect(topics.status('dev-1')).toBe('flotilla/v1/devices/dev-1/status');
    expect(topics.modelState('dev-1')).toBe('flotilla/v1/devices/dev-1/models/state');
    expect(topics.inferenceResponse('dev-1')).toBe('flotilla/v1/devices/dev-1/inference/responses');
    expect(topics.outboxAck('dev-1')).toBe('flotilla/v1/devices/dev-1/outbox/ack');
    expect(topics.commandAck('dev-1')).toBe('flotilla/v1/devices/dev-1/commands/ack');
    expect(topics.deviceSubtree('dev-1')).toBe('flotilla/v1/devices/dev-1/#');
    expect(topics.allDevices.telemetry).toBe('flotilla/v1/devices/+/telemetry');
    expect(topics.allDevices.inferenceResponse).toBe('flotilla/v1/devices/+/inference/responses');
  });

  it.each(TOPIC_KINDS)('[P-2.2] parseTopic inverts topics.%s', (kind) => {
    expect(topics[kind]('dev-1')).toBe(topicFor(kind, 'dev-1'));
    expect(parseTopic(topicFor(kind, 'dev-1'))).toEqual({ deviceId: 'dev-1', kind });
  });

  it.each([
    'flotilla/v1/devices/dev-1',
    'flotilla/v1/devices/dev-1/',
    'flotilla/v1/devices/dev-1/unknown',
    'flotilla/v1/devices/dev-1/telemetry/extra',
    'flotilla/v1/devices/+/telemetry',
    'flotilla/v1/devices/#',
    'flotilla/v1/devices/DEV-1/telemetry',
    'flotilla/v2/devices/dev-1/telemetry',
    '/flotilla/v1/devices/dev-1/telemetry',
    'other/dev-1/telemetry',
  ])('[P-2.2] parseTopic(%j) is null', (topic) => {
    expect(parseTopic(topic)).toBeNull();
  });

  it('[P-2.2] topic paths are unique and retained topics are the documented ones', () => {
    const paths = TOPIC_KINDS.map((k) => TOPIC_SPECS[k].path);
    expect(new Set(paths).size).toBe(paths.length);
    expect(TOPIC_KINDS.filter((k) => TOPIC_SPECS[k].retained).sort()).toEqual(['desired', 'modelState', 'status']);
    expect(TOPIC_KINDS.filter((k) => TOPIC_SPECS[k].outbox).sort()).toEqual(['event', 'telemetry', 'usage']);
  });

  it('[P-2.2] docs/protocol.md topic table matches TOPIC_SPECS', () => {
    const rows = doc
      .split('\n')
      .filter((line) => /^\| `[a-zA-Z]+` \| `\{d\}\//.test(line))
      .map((line) => line.split('|').map((cell) => cell.trim()));
    expect(rows.map((r) => r[1]?.replaceAll('`', ''))).toEqual([...TOPIC_KINDS]);
    for (const row of rows) {
      const kind = row[1]?.replaceAll('`', '') as keyof typeof TOPIC_SPECS;
      const spec = TOPIC_SPECS[kind];
      expect(row[2], kind).toBe(`\`{d}/${spec.path}\``);
      expect(row[3], kind).toBe(spec.direction === 'agent-to-cp' ? 'agent -> CP' : 'CP -> agent');
      expect(row[4], kind).toBe(String(spec.qos));
      expect(row[5]?.startsWith(spec.retained ? '**yes**' : 'no'), kind).toBe(true);
      expect(row[6], kind).toBe(spec.outbox ? '**yes**' : 'no');
      expect(row[7]?.startsWith(`\`${spec.schemaName}\``), kind).toBe(true);
      expect(row[8], kind).toBe(`[${spec.section}]`);
      expect(doc, `section ${spec.section} exists`).toMatch(new RegExp(`^### ${spec.section.replace('.', '\\.')} `, 'm'));
    }
  });
});

describe('[P-2.3] broker ACL', () => {
  it('[P-2.3] an agent subscribes to exactly the cp-to-agent topics of its subtree', () => {
    expect(agentSubscriptions('dev-1').sort()).toEqual(
      [
        'flotilla/v1/devices/dev-1/commands',
        'flotilla/v1/devices/dev-1/desired',
        'flotilla/v1/devices/dev-1/inference/cancel',
        'flotilla/v1/devices/dev-1/inference/requests',
        'flotilla/v1/devices/dev-1/outbox/ack',
      ].sort(),
    );
    for (const t of agentSubscriptions('dev-1')) expect(deviceMayAccess('dev-1', 'subscribe', t)).toBe(true);
  });

  it('[P-2.3] a device publishes only agent-to-cp topics of its own subtree', () => {
    for (const kind of TOPIC_KINDS) {
      const own = topicFor(kind, 'dev-1');
      const agentSends = TOPIC_SPECS[kind].direction === 'agent-to-cp';
      expect(deviceMayAccess('dev-1', 'publish', own), kind).toBe(agentSends);
      expect(deviceMayAccess('dev-1', 'subscribe', own), kind).toBe(!agentSends);
      expect(deviceMayAccess('dev-1', 'publish', topicFor(kind, 'dev-2')), kind).toBe(false);
      expect(deviceMayAccess('dev-1', 'subscribe', topicFor(kind, 'dev-2')), kind).toBe(false);
    }
  });

  it('[P-2.3] wildcards and foreign topics are refused', () => {
    for (const t of ['flotilla/v1/devices/dev-1/#', 'flotilla/v1/devices/+/desired', 'flotilla/v1/devices/dev-1/+', '#', 'flotilla/v1/admin']) {
      expect(deviceMayAccess('dev-1', 'subscribe', t), t).toBe(false);
      expect(deviceMayAccess('dev-1', 'publish', t), t).toBe(false);
    }
  });
});
