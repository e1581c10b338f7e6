export * from './enroll.js';
export * from './errors.js';
export * from './requests.js';
export * from './page.js';
export * from './models.js';
export * from './deployments.js';
export * from './placements.js';
export * from './fleet.js';
