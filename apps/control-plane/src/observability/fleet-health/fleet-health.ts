import type { FleetHealthReason, FleetHealthStatus, FleetHealthView } from '@flotilla/protocol';

/**
 * Fleet health as a pure function of counts. The rules, worst first:
 *
 * unhealthy when any of
 *   - `devices-offline`: at least `unhealthyOfflinePercent` (50 %) of the enrolled, non-revoked devices are offline;
 *   - `deployment-unavailable`: a deployment that wants replicas has none ready;
 *   - `fleet-errors`: the fleet-wide error-rate alert (subject `fleet`) is open;
 * degraded when any of
 *   - `devices-offline`: some device is offline;
 *   - `deployment-below-desired`: a deployment has fewer ready replicas than it wants;
 *   - `alerts-open`: any alert is open (critical or warning);
 * healthy otherwise (an empty fleet is healthy: nothing is failing).
 * Draining devices are neither up nor failing: they are left out of the offline share. Reconnecting devices (stored
 * online by an earlier control-plane process, not back yet) are not counted online; they are enrolled, so they count
 * in the share's whole, and their replicas are not ready.
 */
export type { FleetHealthReason, FleetHealthStatus };

export interface FleetHealthFacts {
  devices: { online: number; reconnecting: number; offline: number; draining: number; revoked: number };
  deployments: { name: string; desired: number; ready: number }[];
  openAlerts: { rule: string; subject: string; severity: 'info' | 'warning' | 'critical' }[];
}

/** The assessment as `GET /api/v1/fleet-health` serves it, less the time it was made. */
export type FleetHealth = Omit<FleetHealthView, 'evaluatedAt'>;

export function assessFleetHealth(facts: FleetHealthFacts, options: { unhealthyOfflinePercent: number }): FleetHealth {
  const reasons: FleetHealthReason[] = [];
  const d = facts.devices;
  const counted = d.online + d.reconnecting + d.offline + d.draining;
  if (d.offline > 0 && counted > 0) {
    const share = (d.offline / counted) * 100;
    reasons.push({
      rule: 'devices-offline',
      status: share >= options.unhealthyOfflinePercent ? 'unhealthy' : 'degraded',
      message: `${d.offline} of ${counted} devices offline (${share.toFixed(0)} %)`,
    });
  }
  let belowDesired = 0;
  let unavailable = 0;
  for (const dep of facts.deployments) {
    if (dep.desired <= 0 || dep.ready >= dep.desired) continue;
    if (dep.ready === 0) {
      unavailable++;
      reasons.push({ rule: 'deployment-unavailable', status: 'unhealthy', message: `deployment ${dep.name}: no ready replica of ${dep.desired}` });
    } else {
      belowDesired++;
      reasons.push({ rule: 'deployment-below-desired', status: 'degraded', message: `deployment ${dep.name}: ${dep.ready} of ${dep.desired} replicas ready` });
    }
  }
  const critical = facts.openAlerts.filter((a) => a.severity === 'critical').length;
  const warning = facts.openAlerts.filter((a) => a.severity === 'warning').length;
  const fleetErrors = facts.openAlerts.find((a) => a.subject === 'fleet' && a.rule === 'error-rate-high');
  if (fleetErrors) reasons.push({ rule: 'fleet-errors', status: 'unhealthy', message: 'fleet-wide error rate above its threshold' });
  if (facts.openAlerts.length > 0) {
    reasons.push({ rule: 'alerts-open', status: 'degraded', message: `${facts.openAlerts.length} open alerts (${critical} critical, ${warning} warning)` });
  }
  const status: FleetHealthStatus = reasons.some((r) => r.status === 'unhealthy') ? 'unhealthy' : reasons.length ? 'degraded' : 'healthy';
  // Worst first, so the first reason explains the status.
  reasons.sort((a, b) => (a.status === b.status ? 0 : a.status === 'unhealthy' ? -1 : 1));
  return {
    status,
    reasons,
    devices: { ...d, total: d.online + d.reconnecting + d.offline + d.draining + d.revoked },
    deployments: { total: facts.deployments.length, belowDesired, unavailable },
    alerts: { open: facts.openAlerts.length, critical, warning },
  };
}
