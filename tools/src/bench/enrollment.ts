import { CreatedEnrollmentTokenSchema } from '@flotilla/protocol';
import { closeEnrollmentAgents, enrollDevice, type SimCredentials } from '../sim/enroll.js';
import { sourceAddress } from '../sim/mqtt-client.js';
import { api } from './http.js';

/** Second octet of the bench's first source address (127.10.0.1): enrollment and the fleet dial from the same ones. */
export const BENCH_ADDRESS_BASE = 10;
/** Devices per source address, enrolling and connecting. */
export const BENCH_DEVICES_PER_ADDRESS = 200;

export interface EnrollmentRun {
  identities: SimCredentials[];
  /** ms per successful enrollment */
  latenciesMs: number[];
  errors: number;
  errorsByReason: Record<string, number>;
  seconds: number;
  tokens: number;
}

export interface EnrollOptions {
  concurrency?: number;
  namePrefix?: string;
  /** devices per source address: each enrolls from the address it will connect from (per-address limits apply) */
  devicesPerAddress?: number;
  /** devices per enrollment token (a site would mint one per batch of boxes; the control plane limits per token) */
  perToken?: number;
}

/**
 * Mints tokens for `n` devices, then enrolls them over REST with `concurrency` requests in flight, each from its
 * device's loopback source address (the simulator's `enrollDevice`).
 */
export async function enrollDevices(cpUrl: string, adminToken: string, n: number, options: EnrollOptions = {}): Promise<EnrollmentRun> {
  const perToken = options.perToken ?? 250;
  const perAddress = options.devicesPerAddress ?? BENCH_DEVICES_PER_ADDRESS;
  const prefix = options.namePrefix ?? `bench-${Date.now().toString(36)}`;
  const tokens: string[] = [];
  for (let left = n; left > 0; left -= perToken) {
    const minted = CreatedEnrollmentTokenSchema.parse(await api(cpUrl, 'POST', '/api/v1/enrollment-tokens', adminToken, { uses: Math.min(perToken, left), labels: { sim: 'bench' } }));
    tokens.push(minted.token);
  }
  const identities: SimCredentials[] = [];
  const latenciesMs: number[] = [];
  const errorsByReason: Record<string, number> = {};
  let errors = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(options.concurrency ?? 16, n) }, async () => {
      while (next < n) {
        const i = next++;
        const t0 = performance.now();
        try {
          const c = await enrollDevice(cpUrl, { token: tokens[Math.floor(i / perToken)] ?? '', name: `${prefix}-${i}`, agentVersion: 'bench-sim' }, sourceAddress(i, perAddress, BENCH_ADDRESS_BASE));
          latenciesMs.push(performance.now() - t0);
          identities[i] = c;
        } catch (error) {
          errors++;
          const status = (error as { status?: number }).status;
          const why = status ? `HTTP ${status}` : error instanceof Error ? error.message.slice(0, 80) : String(error);
          errorsByReason[why] = (errorsByReason[why] ?? 0) + 1;
        }
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  closeEnrollmentAgents();
  // identities keep the device index (and so the source address) of the enrollment
  return { identities: identities.filter((x) => x !== undefined), latenciesMs, errors, errorsByReason, seconds, tokens: tokens.length };
}
