export * from './fleet.js';
export * from './mqtt-client.js';
export * from './tcp-proxy.js';
