export { PacedEngine, type TokenRecord } from '../../src/runtime/paced-engine.js';
