/** Injection tokens for the app's external parts, built outside Nest and handed in. */
export const CONFIG = Symbol('flotilla.config');
export const LOGGER = Symbol('flotilla.logger');
export const BROKER = Symbol('flotilla.broker');
export const DATABASE = Symbol('flotilla.database');
export const READINESS_CHECKS = Symbol('flotilla.readiness-checks');
export const ENDPOINTS = Symbol('flotilla.endpoints');

/** The value of ENDPOINTS: the ports actually bound (differ from the config when it asks for port 0). */
export interface Endpoints {
  httpPort: number;
  mqttPort: number;
  /** set when MQTT over TLS is configured */
  mqttTlsPort: number | undefined;
}
