import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { assertPortFree, listenOn, PortInUseError } from './ports.js';

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
});
