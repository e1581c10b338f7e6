import { describe, expect, it } from 'vitest';
import { assessFleetHealth, type FleetHealthFacts } from './fleet-health.js';

const options = { unhealthyOfflinePercent: 50 };
const base: FleetHealthFacts = { devices: { online: 4, offline: 0, draining: 0, revoked: 0, reconnecting: 0 }, deployments: [], openAlerts: [] };
const assess = (overrides: Partial<FleetHealthFacts>) => assessFleetHealth({ ...base, ...overrides }, options);

describe('fleet health', () => {
  it('is healthy with every device up, every deployment at its replicas and no alert (and for an empty fleet)', () => {
    expect(assess({ deployments: [{ name: 'chat', desired: 2, ready: 2 }] })).toMatchObject({ status: 'healthy', reasons: [] });
    expect(assess({ devices: { online: 0, offline: 0, draining: 0, revoked: 0, reconnecting: 0 } }).status).toBe('healthy');
  });

  it('degrades with some devices offline and becomes unhealthy at the offline share', () => {
    const some = assess({ devices: { online: 3, offline: 1, draining: 0, revoked: 5, reconnecting: 0 } });
    expect(some.status).toBe('degraded');
    expect(some.reasons).toEqual([{ rule: 'devices-offline', status: 'degraded', message: '1 of 4 devices offline (25 %)' }]);
    expect(some.devices.total).toBe(9);
    expect(assess({ devices: { online: 2, offline: 2, draining: 0, revoked: 0, reconnecting: 0 } }).status).toBe('unhealthy');
    // Draining devices count in the fleet but are not failing.
    expect(assess({ devices: { online: 0, offline: 1, draining: 2, revoked: 0, reconnecting: 0 } }).status).toBe('degraded');
  });

  it('degrades when a deployment is below its replicas and is unhealthy when one has none ready', () => {
    const below = assess({ deployments: [{ name: 'chat', desired: 3, ready: 2 }] });
    expect(below).toMatchObject({ status: 'degraded', deployments: { total: 1, belowDesired: 1, unavailable: 0 } });
    const down = assess({ deployments: [{ name: 'chat', desired: 3, ready: 2 }, { name: 'code', desired: 1, ready: 0 }] });
    expect(down.status).toBe('unhealthy');
    expect(down.reasons[0]).toEqual({ rule: 'deployment-unavailable', status: 'unhealthy', message: 'deployment code: no ready replica of 1' });
    expect(assess({ deployments: [{ name: 'off', desired: 0, ready: 0 }] }).status).toBe('healthy');
  });

  it('degrades on open alerts and is unhealthy when the fleet-wide error rate alert is open', () => {
    const warn = assess({ openAlerts: [{ rule: 'queue-high', subject: 'device:a', severity: 'warning' }] });
    expect(warn).toMatchObject({ status: 'degraded', alerts: { open: 1, critical: 0, warning: 1 } });
    const memory = assess({ openAlerts: [{ rule: 'memory-high', subject: 'device:a', severity: 'critical' }] });
    expect(memory.status).toBe('degraded');
    const fleet = assess({ openAlerts: [{ rule: 'error-rate-high', subject: 'fleet', severity: 'critical' }] });
    expect(fleet.status).toBe('unhealthy');
    expect(fleet.reasons.map((r) => r.rule)).toEqual(['fleet-errors', 'alerts-open']);
  });
});
