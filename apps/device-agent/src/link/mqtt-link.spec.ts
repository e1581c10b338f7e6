import { describe, expect, it } from 'vitest';
import { reconnectDelay } from './mqtt-link.js';

describe('reconnectDelay', () => {
  it('grows exponentially, stays within [min, max] and spreads devices with jitter', () => {
    expect(reconnectDelay(0, 500, 30_000, 0)).toBe(500);
    expect(reconnectDelay(0, 500, 30_000, 1)).toBe(500);
    expect(reconnectDelay(3, 500, 30_000, 1)).toBe(4000);
    expect(reconnectDelay(30, 500, 30_000, 1)).toBe(30_000);
    const fleet = Array.from({ length: 100 }, (_, index) => reconnectDelay(5, 500, 30_000, index / 100));
    expect(new Set(fleet).size).toBe(100);
    expect(Math.min(...fleet)).toBeGreaterThanOrEqual(500);
    expect(Math.max(...fleet)).toBeLessThanOrEqual(16_000);
  });
});
