// One worker process of SimFleetWorkers (fleet-workers.ts): a SimFleet driven over IPC.
import type { SimDeviceEvent, SimWorkerAnswer, SimWorkerRequest } from './fleet-workers.js';
import { startSimFleet, type SimFleet } from './sim-fleet.js';

let fleet: SimFleet | undefined;

function events(devices: readonly { deviceId: string }[]): SimDeviceEvent[] {
  const at = Date.now();
  return devices.map((d) => ({ deviceId: d.deviceId, at }));
}

async function handle(r: SimWorkerRequest): Promise<unknown> {
  if (r.op === 'init') {
    fleet = await startSimFleet(r.options);
    return null;
  }
  if (!fleet) throw new Error('not initialised');
  switch (r.op) {
    case 'join':
      await fleet.join(r.n);
      return null;
    case 'stats':
      return fleet.stats();
    case 'crash':
      return events(fleet.crash(r.n));
    case 'silence':
      return events(fleet.silence(r.n));
    case 'revive':
      return fleet.revive().length;
    case 'pauseTelemetry':
      fleet.pauseTelemetry();
      return null;
    case 'resumeTelemetry':
      fleet.resumeTelemetry();
      return null;
    case 'arrivals':
      return fleet.arrivals();
    case 'stop':
      await fleet.stop({ graceful: r.graceful });
      setImmediate(() => process.exit(0));
      return null;
  }
}

process.on('message', (r: SimWorkerRequest) => {
  handle(r).then(
    (value) => process.send?.({ id: r.id, ok: true, value } satisfies SimWorkerAnswer),
    (error: unknown) => process.send?.({ id: r.id, ok: false, error: error instanceof Error ? error.message : String(error) } satisfies SimWorkerAnswer),
  );
});
// the parent going away takes the fleet with it
process.on('disconnect', () => process.exit(0));
