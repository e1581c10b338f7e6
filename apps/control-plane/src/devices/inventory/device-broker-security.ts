import { deviceMayAccess, isValidDeviceId } from '@flotilla/protocol';
import { secretMatches } from '../../identity/auth/secrets.js';
import type { BrokerPrincipal, BrokerSecurity } from '../../platform/broker/embedded-broker.js';
import type { Database } from '../../platform/database/index.js';

/**
 * Devices authenticate with their own credentials, the MQTT client id bound to the device id, and may touch only
 * their own subtree (deny by default, `$SYS` included). [P-2.3]
 */
export class DeviceBrokerSecurity implements BrokerSecurity {
  constructor(private readonly db: Database) {}

  async authenticate(clientId: string, username: string | undefined, password: Buffer | undefined): Promise<BrokerPrincipal | null> {
    if (!username || !password || username !== clientId || !isValidDeviceId(clientId)) return null;
    const credential = await this.db.prisma.deviceCredential.findUnique({
      where: { mqttUsername: username },
      include: { device: { select: { status: true } } },
    });
    if (!credential || credential.revokedAt || credential.device.status === 'revoked') return null;
    if (credential.deviceId !== clientId || !secretMatches(password.toString('utf8'), credential.secretHash)) return null;
    return { deviceId: credential.deviceId };
  }

  canPublish(principal: BrokerPrincipal, topic: string): boolean {
    return deviceMayAccess(principal.deviceId, 'publish', topic);
  }

  canSubscribe(principal: BrokerPrincipal, filter: string): boolean {
    return deviceMayAccess(principal.deviceId, 'subscribe', filter);
  }
}
