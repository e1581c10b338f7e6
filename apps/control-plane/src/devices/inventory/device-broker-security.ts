import { deviceMayAccess, isValidDeviceId } from '@flotilla/protocol';
import type { BrokerPrincipal, BrokerSecurity } from '../../platform/broker/embedded-broker.js';
import type { DeviceCredentialCache } from './device-credentials.js';

/**
 * Devices authenticate with their own credentials, the MQTT client id bound to the device id, and may touch only
 * their own subtree (deny by default, `$SYS` included). [P-2.3] Credentials are checked against the in-memory cache
 * (see DeviceCredentialCache): a CONNECT costs no database round trip once the device is known.
 */
export class DeviceBrokerSecurity implements BrokerSecurity {
  constructor(private readonly credentials: DeviceCredentialCache) {}

  async authenticate(clientId: string, username: string | undefined, password: Buffer | undefined): Promise<BrokerPrincipal | null> {
    if (!username || !password || username !== clientId || !isValidDeviceId(clientId)) return null;
    const verified = await this.credentials.verify(username, password);
    if (!verified || verified.deviceId !== clientId) return null;
    return { deviceId: verified.deviceId };
  }

  canPublish(principal: BrokerPrincipal, topic: string): boolean {
    return deviceMayAccess(principal.deviceId, 'publish', topic);
  }

  canSubscribe(principal: BrokerPrincipal, filter: string): boolean {
    return deviceMayAccess(principal.deviceId, 'subscribe', filter);
  }
}
