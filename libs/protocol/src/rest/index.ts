export * from './enroll.js';
export * from './errors.js';
