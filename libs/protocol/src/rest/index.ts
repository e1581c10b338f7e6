export * from './enroll.js';
export * from './errors.js';
export * from './requests.js';
