import { join } from 'node:path';
import { DeviceDetailSchema, DevicePageSchema } from '@flotilla/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureModel } from '../src/models/index.js';
import { diffSequences, normaliseRecording } from '../src/sim/conformance.js';
import { ControlPlaneProcess } from '../src/sim/control-plane.js';
import { startAgents, type SimAgent } from '../src/sim/fleet.js';
import { startSimFleet, type SimFleet } from '../src/sim/sim-fleet.js';
import { TcpProxy, type TappedPacket } from '../src/sim/tcp-proxy.js';
import { makeTempDir } from './support/temp-dir.js';
import { waitFor } from './support/wait.js';

// A real agent (the built bundle) and a simulated device go through the same life on one control plane, each through
// its own recording proxy: enroll, connect, hello, telemetry, a deployment's desired state, model states up to
// ready, a graceful stop. The recorded MQTT sequences must match (see normaliseRecording for what is compared).

let dir: string;
let cleanup: () => Promise<void>;
let cp: ControlPlaneProcess;
const proxies: TcpProxy[] = [];
let agents: SimAgent[] = [];
let fleet: SimFleet | undefined;

beforeAll(async () => {
  ({ dir, cleanup } = await makeTempDir('sim-conformance'));
  cp = await ControlPlaneProcess.start({ dataDir: join(dir, 'cp') });
}, 90_000);

afterAll(async () => {
  await Promise.all(agents.map((a) => a.kill()));
  await fleet?.stop({ graceful: false });
  for (const proxy of proxies) await proxy.close();
  await cp?.stop();
  await cleanup();
}, 60_000);

async function recordingProxy(): Promise<{ proxy: TcpProxy; packets: TappedPacket[] }> {
  const packets: TappedPacket[] = [];
  const target = new URL(cp.mqttUrl);
  const proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) }, tap: (packet) => packets.push(packet) });
  proxies.push(proxy);
  return { proxy, packets };
}

const telemetryCount = (packets: readonly TappedPacket[]): number =>
  packets.filter((p) => p.direction === 'client-to-server' && p.packet.cmd === 'publish' && p.packet.topic.endsWith('/telemetry')).length;

describe('simulated device conformance', () => {
  it('sends and receives the same MQTT sequence as the real agent over the same life', async () => {
    const model = await ensureModel('tiny');
    await cp.api('/api/v1/models', {
      body: { name: 'conf-tiny', sourceUrl: `file://${model.path}`, sha256: model.sha256, sizeBytes: model.sizeBytes, quantization: 'Q8_0', memoryBytes: model.sizeBytes * 4, contextLength: 2048, tier: 'small' },
    });
    const real = await recordingProxy();
    const sim = await recordingProxy();

    agents = await startAgents({
      controlPlaneUrl: cp.url,
      adminToken: cp.adminToken,
      count: 1,
      baseDir: join(dir, 'agents'),
      env: { FLOTILLA_AGENT_MQTT_URL: real.proxy.url, FLOTILLA_AGENT_TELEMETRY_INTERVAL_SECONDS: '1' },
    });
    fleet = await startSimFleet({ controlPlaneUrl: cp.url, adminToken: cp.adminToken, mqttUrl: sim.proxy.url, behaviour: { telemetryIntervalMs: 1000, downloadMs: 400, loadMs: 200 } });
    const [device] = await fleet.join(1);
    const ids = [agents[0]?.deviceId ?? '', device?.deviceId ?? ''];

    const detail = async (id: string) => DeviceDetailSchema.parse(await cp.api(`/api/v1/devices/${id}`));
    await waitFor(async () => DevicePageSchema.parse(await cp.api('/api/v1/devices')).items.filter((d) => ids.includes(d.id) && d.status === 'online').length === 2, 'both online', 60_000, 100);
    await waitFor(() => telemetryCount(real.packets) >= 2 && telemetryCount(sim.packets) >= 2, 'telemetry from both', 30_000);

    await cp.api('/api/v1/deployments', { body: { name: 'conf', model: 'conf-tiny', replicas: 2, parallel: 1, contextSize: 2048 } });
    await waitFor(
      async () => (await Promise.all(ids.map(detail))).every((d) => d.modelStates.some((m) => m.model === 'conf-tiny' && m.state === 'ready')),
      'the model ready on both',
      90_000,
      100,
    );
    const before = [telemetryCount(real.packets), telemetryCount(sim.packets)];
    await waitFor(() => telemetryCount(real.packets) >= (before[0] ?? 0) + 2 && telemetryCount(sim.packets) >= (before[1] ?? 0) + 2, 'more telemetry', 30_000);

    await Promise.all([agents[0]?.stop(), fleet.stop()]);
    await waitFor(() => real.proxy.connections().length === 0 && sim.proxy.connections().length === 0, 'both disconnected', 20_000);

    const a = normaliseRecording(real.packets);
    const b = normaliseRecording(sim.packets);
    const sentDiff = diffSequences(a.sent, b.sent, ['agent', 'sim']);
    const receivedDiff = diffSequences(a.received, b.received, ['agent', 'sim']);
    console.log(`[conformance] device -> control plane (agent):\n  ${a.sent.join('\n  ')}\n[conformance] control plane -> device (agent):\n  ${a.received.join('\n  ')}`);
    console.log(`[conformance] periodic, agent: ${JSON.stringify(a.periodic)}\n[conformance] periodic, sim:   ${JSON.stringify(b.periodic)}`);
    if (sentDiff) console.log(`[conformance] device -> control plane differs:\n${sentDiff}`);
    if (receivedDiff) console.log(`[conformance] control plane -> device differs:\n${receivedDiff}`);
    expect(a.problems).toEqual([]);
    expect(b.problems).toEqual([]);
    expect(sentDiff).toBe('');
    expect(receivedDiff).toBe('');
    // Periodic traffic: the same kinds with the same flags on both sides (counts differ with timing).
    expect(Object.keys(b.periodic).filter((k) => k.includes('PUBLISH')).sort()).toEqual(Object.keys(a.periodic).filter((k) => k.includes('PUBLISH')).sort());
  }, 240_000);
});

describe('normaliseRecording and diffSequences', () => {
  const publish = (topic: string, payload: string, retain: boolean, messageId: number): TappedPacket => ({
    connection: 1,
    direction: 'client-to-server',
    at: 0,
    packet: { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain, dup: false, messageId },
  });
  const status = JSON.stringify({ v: 1, state: 'online', sessionId: 's-1', ts: 1, reason: 'startup' });

  it('catches a retain flag that differs, and collapses repeats', () => {
    const agent = normaliseRecording([publish('flotilla/v1/devices/dev-a/status', status, true, 1), publish('flotilla/v1/devices/dev-a/status', status, true, 2)]);
    const sim = normaliseRecording([publish('flotilla/v1/devices/dev-b/status', status, false, 1)]);
    expect(agent.sent).toEqual(['PUBLISH status q1 r1 online/startup']);
    expect(diffSequences(agent.sent, sim.sent, ['agent', 'sim'])).toBe(
      ['+ PUBLISH status q1 r0 online/startup   (only sim)', '- PUBLISH status q1 r1 online/startup   (only agent)'].join('\n'),
    );
    expect(diffSequences(agent.sent, agent.sent)).toBe('');
  });
});
