import { Writable } from 'node:stream';
import { startSimFleet, type SimFleet } from '@flotilla/tools/sim';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { FleetSizeAdvisor } from '../../src/devices/ingest/fleet-size-advisor.js';
import { adminLogin, startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';
import { describeBackends } from '../support/databases.js';

/** Issue 11: the embedded PGlite's measured limit is stated in a warning when a fleet outgrows it. */
const LIMIT = 3;
const DEVICES = 4;

interface LogLine {
  level: number;
  msg: string;
  devices?: number;
  limit?: number;
}

describeBackends('fleet size advisor', (backend) => {
  let t: TestControlPlane | undefined;
  let fleet: SimFleet | undefined;
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const warnings = () => logs.filter((line) => line.level === 40 && line.msg.includes('FLOTILLA_PGLITE_DEVICE_LIMIT'));

  afterEach(async () => {
    await fleet?.stop({ graceful: false });
    fleet = undefined;
    await t?.dispose();
    t = undefined;
  });

  it(`warns ${backend === 'pglite' ? '' : 'never '}when more devices than FLOTILLA_PGLITE_DEVICE_LIMIT are connected or enrolled`, { timeout: 60_000 }, async () => {
    t = await startTestControlPlane(backend, { FLOTILLA_PGLITE_DEVICE_LIMIT: String(LIMIT) }, pino({ level: 'warn' }, sink));
    const cp = t.cp;
    expect(warnings()).toEqual([]);
    const { adminToken } = await adminLogin(cp, t.isolated.dataDir);
    fleet = await startSimFleet({ controlPlaneUrl: cp.url, mqttUrl: `mqtt://127.0.0.1:${cp.mqttPort}`, adminToken, namePrefix: 'advisor' });
    await fleet.join(LIMIT);
    await fleet.waitFor((s) => s.online === LIMIT, `${LIMIT} online`, 20_000);
    cp.app.get(FleetSizeAdvisor).check();
    expect(warnings()).toEqual([]); // at the limit: fine

    await fleet.join(DEVICES - LIMIT);
    await fleet.waitFor((s) => s.online === DEVICES, `${DEVICES} online`, 20_000);
    const advisor = cp.app.get(FleetSizeAdvisor);
    advisor.check();
    advisor.check(); // once per crossing, not per check
    if (backend === 'postgres') {
      expect(warnings()).toEqual([]);
    } else {
      expect(warnings()).toEqual([expect.objectContaining({ devices: DEVICES, limit: LIMIT, msg: expect.stringContaining(`${DEVICES} devices connected`) })]);
      expect(warnings()[0]?.msg).toContain('PostgreSQL');
    }

    // At start, the enrolled count alone tells.
    await fleet.stop({ graceful: false });
    fleet = undefined;
    logs.length = 0;
    await t.restart();
    expect(warnings()).toEqual(backend === 'pglite' ? [expect.objectContaining({ devices: DEVICES, msg: expect.stringContaining(`${DEVICES} devices enrolled`) })] : []);
  });
});
