export * from './devices.js';
export * from './enroll.js';
export * from './errors.js';
export * from './identity.js';
export * from './requests.js';
