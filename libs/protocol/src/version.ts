/** The `v` field every MQTT payload carries. [P-1.3] */
export const PROTOCOL_VERSION = 1 as const;
/** Topic prefix; the version in the path changes only with an incompatible protocol. [P-1.2] */
export const TOPIC_PREFIX = 'flotilla/v1' as const;
/** Largest MQTT payload (UTF-8 bytes) any side accepts or sends. [P-1.4] */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;
