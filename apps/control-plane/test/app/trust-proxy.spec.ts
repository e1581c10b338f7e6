import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/app/config.js';
import { startTestControlPlane, type TestControlPlane } from '../support/control-plane.js';

const limits = { FLOTILLA_RATE_LIMIT_LOGIN_PER_IP: '2', FLOTILLA_RATE_LIMIT_LOGIN_PER_ACCOUNT: '0' };

/** Failed logins from 127.0.0.1 claiming to forward `client`; returns the statuses. */
async function logins(t: TestControlPlane, client: string, count: number): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < count; i++) {
    const res = await fetch(`${t.cp.url}/api/v1/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': client },
      body: JSON.stringify({ email: `nobody${i}@example.com`, password: 'wrong-password' }),
    });
    await res.text();
    statuses.push(res.status);
  }
  return statuses;
}

describe('FLOTILLA_TRUST_PROXY', () => {
  it('parses off, true and address/CIDR lists, and refuses anything else', () => {
    expect(loadConfig({}).http.trustProxy).toBe(false);
    expect(loadConfig({ FLOTILLA_TRUST_PROXY: 'false' }).http.trustProxy).toBe(false);
    expect(loadConfig({ FLOTILLA_TRUST_PROXY: 'true' }).http.trustProxy).toBe(true);
    expect(loadConfig({ FLOTILLA_TRUST_PROXY: '127.0.0.1, 10.0.0.0/8,::1,fd00::/8,loopback' }).http.trustProxy).toEqual([
      '127.0.0.1',
      '10.0.0.0/8',
      '::1',
      'fd00::/8',
      'loopback',
    ]);
    expect(() => loadConfig({ FLOTILLA_TRUST_PROXY: '10.0.0.0/33' })).toThrow(/FLOTILLA_TRUST_PROXY must be/);
    expect(() => loadConfig({ FLOTILLA_TRUST_PROXY: 'proxy.example' })).toThrow(/not proxy\.example/);
  });

  describe('behind a proxy at 127.0.0.1', () => {
    let t: TestControlPlane;
    beforeAll(async () => {
      t = await startTestControlPlane('pglite', { ...limits, FLOTILLA_TRUST_PROXY: '127.0.0.1' });
    });
    afterAll(() => t?.dispose());

    it('limits each forwarded client address on its own', async () => {
      expect(await logins(t, '203.0.113.1', 3)).toEqual([401, 401, 429]);
      // another client behind the same proxy keeps its own budget
      expect(await logins(t, '203.0.113.2', 1)).toEqual([401]);
      // the right-most untrusted hop counts, so a client cannot pick its own address by prefixing one
      expect(await logins(t, '198.51.100.7, 203.0.113.1', 1)).toEqual([429]);
    });
  });

  describe('off (the default)', () => {
    let t: TestControlPlane;
    beforeAll(async () => {
      t = await startTestControlPlane('pglite', limits);
    });
    afterAll(() => t?.dispose());

    it('ignores X-Forwarded-For: every client shares the peer address', async () => {
      expect(await logins(t, '203.0.113.1', 2)).toEqual([401, 401]);
      expect(await logins(t, '203.0.113.2', 1)).toEqual([429]);
    });
  });
});
