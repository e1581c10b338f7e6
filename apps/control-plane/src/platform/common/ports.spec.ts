import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { assertPortFree, listenOn, planPorts, PortInUseError, rememberPorts, type PlannedPort } from './ports.js';

describe('ports', () => {
  const servers: ReturnType<typeof createServer>[] = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => new Promise((done) => s.close(done))));
    servers.length = 0;
  });

  it('names the port and the variable when the port is taken', async () => {
    const holder = createServer();
    servers.push(holder);
    const port = await listenOn(holder, { host: '127.0.0.1', port: 0, variable: 'X', purpose: 'x' });
    const error = await assertPortFree({ host: '127.0.0.1', port, variable: 'FLOTILLA_MQTT_PORT', purpose: 'MQTT' }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PortInUseError);
    expect((error as Error).message).toBe(
      `Port ${port} (MQTT) is already in use: set FLOTILLA_MQTT_PORT to a free port, e.g. FLOTILLA_MQTT_PORT=${port + 1}`,
    );
    expect((error as Error).message).not.toContain('\n');
  });

  it('accepts a free port', async () => {
    const probe = createServer();
    servers.push(probe);
    const port = await listenOn(probe, { host: '127.0.0.1', port: 0, variable: 'X', purpose: 'x' });
    await new Promise((done) => probe.close(done));
    servers.length = 0;
    await expect(assertPortFree({ host: '127.0.0.1', port, variable: 'X', purpose: 'x' })).resolves.toBeUndefined();
  });

  describe('planPorts', () => {
    const dirs: string[] = [];
    afterEach(async () => {
      for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
    });
    const hold = async () => {
      const holder = createServer();
      servers.push(holder);
      return listenOn(holder, { host: '127.0.0.1', port: 0, variable: 'X', purpose: 'x' });
    };
    const mqtt = (port: number, setByVariable = false): PlannedPort => ({
      key: 'mqtt',
      host: '127.0.0.1',
      port,
      setByVariable,
      variable: 'FLOTILLA_MQTT_PORT',
      purpose: 'MQTT',
    });

    it('moves a taken default port to the next free one, records it, and keeps it on later plans', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-ports-'));
      dirs.push(dataDir);
      const taken = await hold();
      const first = await planPorts(dataDir, [mqtt(taken)]);
      const moved = first.ports.mqtt ?? 0;
      expect(moved).toBeGreaterThan(taken);
      expect(first.moves).toEqual([{ key: 'mqtt', purpose: 'MQTT', variable: 'FLOTILLA_MQTT_PORT', from: taken, to: moved }]);
      expect(first.remember).toEqual({ mqtt: moved });
      await rememberPorts(dataDir, first.remember);
      expect(JSON.parse(await readFile(join(dataDir, 'ports.json'), 'utf8'))).toEqual({ mqtt: moved });
      // The default is free again later: the recorded port still wins, since devices were given it.
      servers.splice(0).forEach((s) => s.close());
      const second = await planPorts(dataDir, [mqtt(taken)]);
      expect(second).toEqual({ ports: { http: undefined, mqtt: moved, mqttTls: undefined }, moves: [], remember: {} });
    });

    it('stops with one line naming a recorded port that is taken and why it cannot move', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-ports-'));
      dirs.push(dataDir);
      const recorded = await hold();
      await rememberPorts(dataDir, { mqtt: recorded });
      const error = await planPorts(dataDir, [mqtt(1883)]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PortInUseError);
      expect((error as Error).message).toBe(
        `Port ${recorded} (MQTT) is already in use, and it cannot move: this data directory's devices are enrolled on it ` +
          `(recorded in ${join(dataDir, 'ports.json')}); stop the process that holds it, or set FLOTILLA_MQTT_PORT and enroll the devices again`,
      );
    });

    it('never moves a port set by a variable, and never records it', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'flotilla-ports-'));
      dirs.push(dataDir);
      const taken = await hold();
      const error = await planPorts(dataDir, [mqtt(taken, true)]).catch((e: unknown) => e);
      expect((error as Error).message).toBe(
        `Port ${taken} (MQTT) is already in use: set FLOTILLA_MQTT_PORT to a free port, e.g. FLOTILLA_MQTT_PORT=${taken + 1}`,
      );
      servers.splice(0).forEach((s) => s.close());
      await new Promise((r) => setTimeout(r, 50));
      expect((await planPorts(dataDir, [mqtt(taken, true)])).remember).toEqual({});
    });
  });
});
