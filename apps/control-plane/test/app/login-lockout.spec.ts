import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';

// Issue 8 point 6: after 10 bad logins a minute on an account, its correct password got 429 too, from anywhere.
// The control plane trusts a proxy at 127.0.0.1, so X-Forwarded-For names the client address of each attempt.

interface Attempt {
  status: number;
  /** ms from `since` to the answer */
  at: number;
  retryAfter: string | null;
}

async function login(t: TestControlPlane, client: string, email: string, password: string, since = Date.now()): Promise<Attempt> {
  const res = await fetch(`${t.cp.url}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': client },
    body: JSON.stringify({ email, password }),
  });
  await res.text();
  return { status: res.status, at: Date.now() - since, retryAfter: res.headers.get('retry-after') };
}

async function adminCredentials(t: TestControlPlane): Promise<{ email: string; password: string }> {
  const creds = JSON.parse(await readFile(join(t.isolated.dataDir, 'initial-credentials.json'), 'utf8')) as { adminEmail: string; adminPassword: string };
  return { email: creds.adminEmail, password: creds.adminPassword };
}

describe('login limits cannot lock the owner out', () => {
  describe('with the default limits', () => {
    let t: TestControlPlane;
    beforeAll(async () => {
      t = await startTestControlPlane('pglite', { FLOTILLA_TRUST_PROXY: '127.0.0.1' });
    });
    afterAll(() => t?.dispose());

    it('limits the attacking address on that account while the owner elsewhere logs in at once', { timeout: 60_000 }, async () => {
      const admin = await adminCredentials(t);
      const attacker = '203.0.113.66';
      const statuses: number[] = [];
      for (let i = 0; i < 15; i++) statuses.push((await login(t, attacker, admin.email, `guess-${i}`)).status);

      // The owner, from an address with no failures, is neither refused nor slowed.
      const owner = await login(t, '198.51.100.10', admin.email, admin.password);
      expect(owner.status).toBe(200);
      expect(owner.at, `owner answered after ${owner.at} ms`).toBeLessThan(2500);

      // 5 failures per (address, account) a minute, then that pair is refused without checking the password.
      expect(statuses).toEqual([...Array<number>(5).fill(401), ...Array<number>(10).fill(429)]);
      const refused = await login(t, attacker, admin.email.toUpperCase(), admin.password);
      expect(refused.status).toBe(429);
      expect(Number(refused.retryAfter)).toBeGreaterThanOrEqual(1);
    });
  });

  describe('with failures spread over many addresses', () => {
    const PER_ACCOUNT = 20; // one failure every 3 s once the 20 are spent
    let t: TestControlPlane;
    beforeAll(async () => {
      t = await startTestControlPlane('pglite', { FLOTILLA_TRUST_PROXY: '127.0.0.1', FLOTILLA_RATE_LIMIT_LOGIN_PER_ACCOUNT: String(PER_ACCOUNT) });
    });
    afterAll(() => t?.dispose());

    it('slows every attempt on the account to the per-account rate, refuses none, and lets the correct password in', { timeout: 90_000 }, async () => {
      const admin = await adminCredentials(t);
      // One failure from each of 20 addresses: each address is clean, so nothing refuses them.
      for (let i = 0; i < PER_ACCOUNT; i++) expect((await login(t, `192.0.2.${i + 1}`, admin.email, `guess-${i}`)).status).toBe(401);

      // Now three more guesses from fresh addresses and then the owner, all at once: each waits for its turn.
      const since = Date.now();
      const guesses = [101, 102, 103].map((n) => login(t, `192.0.2.${n}`, admin.email, `guess-${n}`, since));
      await new Promise((r) => setTimeout(r, 50));
      const owner = login(t, '198.51.100.20', admin.email, admin.password, since);
      const answers = await Promise.all([...guesses, owner]);
      expect(answers.map((a) => a.status)).toEqual([401, 401, 401, 200]);
      // Past the budget the account serves one failed attempt per 3 s, whatever the addresses: the first of these may
      // still use refill accrued while the 20 ran, the others come one interval apart (less 1 s for the box's jitter).
      // Only failures count: the owner's success hands its turn back, so it is not one of the spaced answers.
      const times = answers.filter((a) => a.status === 401).map((a) => a.at).sort((a, b) => a - b);
      const all = answers.map((a) => `${a.status}@${a.at}`).join(', ');
      const interval = 60_000 / PER_ACCOUNT;
      for (let k = 1; k < times.length; k++) {
        expect((times[k] as number) - (times[k - 1] as number), `answers ${all} ms`).toBeGreaterThanOrEqual(interval - 1000);
      }
      expect(times[2], `answers ${all} ms`).toBeGreaterThanOrEqual(2 * interval - 1000);
      // and the owner is slowed at most like the guesses around it, never refused
      expect(answers[3]?.at, `answers ${all} ms`).toBeLessThanOrEqual(4 * interval + 2000);
    });
  });
});
