// The bench's fleet interface over the project's simulator (tools/src/sim, `startSimFleet`), chosen with
// `--sim project`. Gaps bridged here, to be closed in the simulator: it runs in this process only (no worker split
// for 10k fleets), it does not record when a model first arrived in a device's desired state (the placement suite
// needs that: it refuses this engine), and it has no verb to stop creating telemetry (bridged by stretching the
// shared behaviour's interval).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveCredentials } from '../sim/enroll.js';
import { startSimFleet, type SimFleet } from '../sim/sim-fleet.js';
import type { BenchFleet, DeviceEvent } from './bench-fleet.js';
import type { LightDeviceIdentity, LightFleetOptions, LightFleetStats } from './light-fleet.js';

export class ProjectFleet implements BenchFleet {
  readonly pids = [process.pid];
  private fleet: SimFleet | undefined;
  private dir: string | undefined;

  constructor(private readonly options: LightFleetOptions) {}

  get size(): number {
    return this.fleet?.devices.length ?? 0;
  }

  async join(identities: readonly LightDeviceIdentity[]): Promise<void> {
    if (this.fleet) throw new Error('the project simulator joins once per bench fleet');
    const mqttUrl = `mqtt://${this.options.host}:${this.options.port}`;
    const behaviour = {
      mode: this.options.mode === 'mosquitto' ? ('plain' as const) : ('control-plane' as const),
      keepaliveSeconds: this.options.keepaliveSeconds ?? 5,
      telemetryIntervalMs: this.options.telemetryIntervalMs ?? 5000,
      resendAfterMs: this.options.resendAfterMs ?? 30_000,
      downloadMs: 0,
      loadMs: this.options.modelLoadMs ?? 50,
    };
    let credentialsFile: string | undefined;
    if (this.options.mode === 'flotilla') {
      this.dir = await mkdtemp(join(tmpdir(), 'flotilla-bench-sim-'));
      credentialsFile = join(this.dir, 'credentials.json');
      await saveCredentials(credentialsFile, {
        version: 1,
        controlPlaneUrl: '',
        devices: identities.map((i) => ({ name: i.deviceId, deviceId: i.deviceId, username: i.username ?? '', password: i.password ?? '', urls: [mqttUrl] })),
      });
    }
    const cp = this.options.controlPlaneUrl ? { controlPlaneUrl: this.options.controlPlaneUrl } : {};
    this.fleet = await startSimFleet({ mqttUrl, ...cp, ...(credentialsFile ? { credentialsFile } : {}), namePrefix: `bench-${Date.now().toString(36)}`, behaviour });
    await this.fleet.join(identities.length);
  }

  private get sim(): SimFleet {
    if (!this.fleet) throw new Error('not joined');
    return this.fleet;
  }

  stats(): Promise<LightFleetStats> {
    if (!this.fleet) return Promise.resolve({ devices: 0, connected: 0, everConnected: 0, failedConnects: 0, failedByReason: {}, dropped: 0, telemetryOffered: 0, telemetryAcked: 0, resends: 0, pubacks: 0, desiredReceived: 0 });
    const s = this.fleet.stats();
    return Promise.resolve({
      devices: s.devices,
      connected: s.connected,
      // the simulator does not count devices that connected at least once: the parked ones had to connect first
      everConnected: Math.min(s.devices, s.connected + s.crashed + s.silenced),
      failedConnects: s.counters.failedConnects,
      failedByReason: {},
      dropped: s.counters.connectionsLost,
      telemetryOffered: s.counters.entriesSent,
      telemetryAcked: s.counters.entriesAcked,
      resends: s.counters.entriesResent,
      pubacks: s.counters.pubacks,
      desiredReceived: 0,
    });
  }

  crash(k: number): Promise<DeviceEvent[]> {
    const at = Date.now();
    return Promise.resolve(this.sim.crash(k).map((d) => ({ deviceId: d.deviceId, at })));
  }

  silence(k: number): Promise<DeviceEvent[]> {
    const at = Date.now();
    return Promise.resolve(this.sim.silence(k).map((d) => ({ deviceId: d.deviceId, at })));
  }

  quiesce(): Promise<void> {
    // bridge: no verb for it; a device schedules its next entry from the shared behaviour after each one, so one more
    // entry each, then none for an hour (an integer: it is also the entry's windowMs, which the protocol checks)
    this.sim.behaviour.telemetryIntervalMs = 3_600_000;
    return Promise.resolve();
  }

  modelArrivals(): Promise<[string, string, number][]> {
    return Promise.reject(new Error('the project simulator does not record desired-state arrival times yet: use --sim light'));
  }

  async stop(): Promise<void> {
    await this.fleet?.stop();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}
