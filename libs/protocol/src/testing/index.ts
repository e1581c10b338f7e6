export * from './factories.js';
export * from './log-secrets.js';
