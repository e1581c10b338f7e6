export * from './enroll.js';
export * from './errors.js';
export * from './requests.js';
export * from './observability.js';
export * from './gateway.js';
export * from './platform.js';
