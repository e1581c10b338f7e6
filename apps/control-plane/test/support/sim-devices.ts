import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { generateSecret, hashSecret } from '../../src/identity/auth/secrets.js';
import { openDatabase, type OpenDatabaseOptions } from '../../src/platform/database/index.js';

/**
 * N enrolled devices written straight into a (migrated here) database, and their credentials in the simulator's
 * credentials file (tools/sim `credentialsFile`: devices join without enrolling). Scenarios about what comes after
 * enrollment use it so that REST enrollment (measured by the benchmarks) does not take their time budget; start the
 * control plane after this, so every cache and index it loads at start knows the devices.
 */
export async function seedSimDevices(
  options: OpenDatabaseOptions,
  file: string,
  { count, namePrefix, labels = {} }: { count: number; namePrefix: string; labels?: Record<string, string> },
): Promise<void> {
  const devices = Array.from({ length: count }, (_, i) => ({ id: randomUUID(), name: `${namePrefix}-${i + 1}`, password: generateSecret('device') }));
  const database = await openDatabase(options);
  try {
    // two columns per credential and five per device: well under PostgreSQL's bind-parameter limit per statement
    for (let i = 0; i < devices.length; i += 2000) {
      const chunk = devices.slice(i, i + 2000);
      await database.prisma.device.createMany({ data: chunk.map((d) => ({ id: d.id, name: d.name, labels, agentVersion: 'sim' })) });
      await database.prisma.deviceCredential.createMany({ data: chunk.map((d) => ({ deviceId: d.id, mqttUsername: d.id, secretHash: hashSecret(d.password) })) });
    }
  } finally {
    await database.close();
  }
  // the broker URL is learnt from the control plane at join time (SimFleetOptions.mqttUrl)
  const credentials = devices.map((d) => ({ name: d.name, deviceId: d.id, username: d.id, password: d.password, urls: [] as string[] }));
  await writeFile(file, JSON.stringify({ version: 1, controlPlaneUrl: '', devices: credentials }), { mode: 0o600 });
}
