import { CreatedEnrollmentTokenSchema, EnrollResponseSchema, ENROLL_PATH } from '@flotilla/protocol';
import { api } from './http.js';
import type { LightDeviceIdentity } from './light-fleet.js';

export interface EnrollmentRun {
  identities: LightDeviceIdentity[];
  /** ms per successful enrollment */
  latenciesMs: number[];
  errors: number;
  errorsByReason: Record<string, number>;
  seconds: number;
}

/** Mints one token for `n` uses, then enrolls `n` devices over REST with `concurrency` requests in flight. */
export async function enrollDevices(cpUrl: string, adminToken: string, n: number, concurrency = 16, namePrefix = 'bench'): Promise<EnrollmentRun> {
  const minted = CreatedEnrollmentTokenSchema.parse(await api(cpUrl, 'POST', '/api/v1/enrollment-tokens', adminToken, { uses: n, labels: { sim: 'bench' } }));
  const identities: LightDeviceIdentity[] = [];
  const latenciesMs: number[] = [];
  const errorsByReason: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      while (next < n) {
        const i = next++;
        const t0 = performance.now();
        try {
          const res = await fetch(cpUrl + ENROLL_PATH, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ token: minted.token, name: `${namePrefix}-${i}`, agentVersion: 'bench-sim' }),
          });
          const text = await res.text();
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          const answer = EnrollResponseSchema.parse(JSON.parse(text));
          latenciesMs.push(performance.now() - t0);
          identities.push({ deviceId: answer.deviceId, username: answer.mqtt.username, password: answer.mqtt.password });
        } catch (error) {
          errors++;
          const why = error instanceof Error ? error.message.slice(0, 80) : String(error);
          errorsByReason[why] = (errorsByReason[why] ?? 0) + 1;
        }
      }
    }),
  );
  return { identities, latenciesMs, errors, errorsByReason, seconds: (performance.now() - started) / 1000 };
}
