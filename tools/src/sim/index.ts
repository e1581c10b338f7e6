export * from './fleet.js';
export * from './tcp-proxy.js';
