// One worker process of a simulated fleet (sim-fleet.ts): a LightFleet driven over IPC.
import { LightFleet } from './light-fleet.js';
import type { WorkerAnswer, WorkerRequest } from './bench-fleet.js';

let fleet: LightFleet | undefined;

function answer(m: WorkerAnswer): void {
  process.send?.(m);
}

async function handle(r: WorkerRequest): Promise<unknown> {
  if (r.op === 'init') {
    fleet = new LightFleet(r.options);
    return null;
  }
  if (!fleet) throw new Error('not initialised');
  switch (r.op) {
    case 'join':
      await fleet.join(r.identities);
      return null;
    case 'stats':
      return fleet.stats();
    case 'crash':
      return fleet.crash(r.k);
    case 'silence':
      return fleet.silence(r.k);
    case 'quiesce':
      fleet.quiesce();
      return null;
    case 'modelArrivals':
      return fleet.modelArrivals();
    case 'stop':
      await fleet.stop();
      setImmediate(() => process.exit(0));
      return null;
  }
}

process.on('message', (r: WorkerRequest) => {
  handle(r).then(
    (value) => answer({ id: r.id, ok: true, value }),
    (error: unknown) => answer({ id: r.id, ok: false, error: error instanceof Error ? error.message : String(error) }),
  );
});
// the runner going away takes the fleet with it
process.on('disconnect', () => process.exit(0));
