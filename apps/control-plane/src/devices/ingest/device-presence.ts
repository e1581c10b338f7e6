import { Inject, Injectable } from '@nestjs/common';
import type { PresenceStatus } from '@flotilla/protocol';
import { BROKER, DATABASE } from '../../platform/tokens.js';
import type { EmbeddedBroker } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';
import type { DeviceStatus } from '../../generated/prisma/client.js';

/**
 * A device's status as the views show it: the stored one, or `reconnecting` for a device that an earlier control-plane
 * process stored as online/draining and that has neither spoken to this process nor a live session on its broker. It
 * may have died while no control plane was watching; the registry's reconnect grace decides.
 */
export type { PresenceStatus } from '@flotilla/protocol';

/**
 * Which devices are back on this process after a start [P-3.1]: the liveness service records every hello and
 * online/draining status; the broker says whose session is live. The gateway (routing), the REST views, the scheduler
 * and the fleet counts read it here, so they agree on what "reconnecting" means.
 */
@Injectable()
export class DevicePresence {
  /** when this process started judging; only it sets `lastSeenAt` after that */
  readonly startedAt = new Date();
  /** devices that said hello or online/draining to this process: from then on their stored status is this process's */
  private readonly heard = new Set<string>();

  constructor(
    @Inject(DATABASE) private readonly db: Database,
    @Inject(BROKER) private readonly broker: Pick<EmbeddedBroker, 'isConnected'>,
  ) {}

  /** Records that the device spoke to this process; true the first time. */
  noteHeard(deviceId: string): boolean {
    if (this.heard.has(deviceId)) return false;
    this.heard.add(deviceId);
    return true;
  }

  /** Stored as online/draining, not heard from by this process, no live session here: possibly dead, never ready. */
  isReconnecting(deviceId: string, stored: DeviceStatus): boolean {
    return (stored === 'online' || stored === 'draining') && !this.heard.has(deviceId) && !this.broker.isConnected(deviceId);
  }

  /** The status the views show for a stored status. */
  status(deviceId: string, stored: DeviceStatus): PresenceStatus {
    return this.isReconnecting(deviceId, stored) ? 'reconnecting' : stored;
  }

  /** The devices reconnecting now, with their stored status (empty once all came back or the reconnect grace expired). */
  async reconnectingDevices(): Promise<Map<string, DeviceStatus>> {
    // Devices this process heard from have a later lastSeenAt: only the few others are checked.
    const candidates = await this.db.prisma.device.findMany({
      where: { status: { in: ['online', 'draining'] }, OR: [{ lastSeenAt: null }, { lastSeenAt: { lt: this.startedAt } }] },
      select: { id: true, status: true },
    });
    return new Map(candidates.filter((d) => this.isReconnecting(d.id, d.status)).map((d) => [d.id, d.status]));
  }
}
