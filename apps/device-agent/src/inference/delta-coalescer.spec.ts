import { describe, expect, it } from 'vitest';
import { DeltaCoalescer, type StreamingSettings } from './delta-coalescer.js';

function collect(settings: StreamingSettings, maxChunkLength?: number): { chunks: string[]; coalescer: DeltaCoalescer } {
  const chunks: string[] = [];
  const coalescer = new DeltaCoalescer({ ...settings, emit: (text) => chunks.push(text), ...(maxChunkLength ? { maxChunkLength } : {}) });
  return { chunks, coalescer };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('DeltaCoalescer [P-3.7]', () => {
  it('sends the first delta at once, then one chunk per maxTokensPerChunk deltas', () => {
    const { chunks, coalescer } = collect({ flushIntervalMs: 60_000, maxTokensPerChunk: 3 });
    coalescer.push('a');
    expect(chunks).toEqual(['a']);
    for (const text of ['b', 'c', 'd', 'e', 'f', 'g', 'h']) coalescer.push(text);
    expect(chunks).toEqual(['a', 'bcd', 'efg']);
    expect(coalescer.pending).toBe(1);
    coalescer.close();
    expect(chunks).toEqual(['a', 'bcd', 'efg', 'h']);
    coalescer.push('late');
    coalescer.flush();
    expect(chunks.join('')).toBe('abcdefgh');
  });

  it('flushes flushIntervalMs after the first buffered delta, not after the last', async () => {
    const { chunks, coalescer } = collect({ flushIntervalMs: 40, maxTokensPerChunk: 1000 });
    coalescer.push('first');
    coalescer.push(' x');
    await sleep(25);
    coalescer.push(' y');
    expect(chunks).toEqual(['first']);
    await sleep(35);
    expect(chunks).toEqual(['first', ' x y']);
    coalescer.push(' z');
    await sleep(60);
    expect(chunks).toEqual(['first', ' x y', ' z']);
    coalescer.close();
    expect(chunks).toHaveLength(3);
  });

  it('flush() sends what is buffered and cancels the timer; empty deltas are ignored', async () => {
    const { chunks, coalescer } = collect({ flushIntervalMs: 30, maxTokensPerChunk: 8 });
    coalescer.push('');
    expect(chunks).toEqual([]);
    coalescer.push('a');
    coalescer.push('b');
    coalescer.flush();
    coalescer.flush();
    expect(chunks).toEqual(['a', 'b']);
    await sleep(50);
    expect(chunks).toEqual(['a', 'b']);
  });

  it('sends every delta on its own with maxTokensPerChunk 1 or flushIntervalMs 0', () => {
    for (const settings of [
      { flushIntervalMs: 20, maxTokensPerChunk: 1 },
      { flushIntervalMs: 0, maxTokensPerChunk: 8 },
    ]) {
      const { chunks, coalescer } = collect(settings);
      for (const text of ['a', 'b', 'c']) coalescer.push(text);
      expect(chunks).toEqual(['a', 'b', 'c']);
    }
  });

  it('keeps every chunk within the delta bound without splitting a surrogate pair', () => {
    const { chunks, coalescer } = collect({ flushIntervalMs: 60_000, maxTokensPerChunk: 100 }, 4);
    coalescer.push('0');
    coalescer.push('ab');
    coalescer.push('cd');
    coalescer.push('e');
    coalescer.push('xyz😀w');
    coalescer.close();
    expect(chunks.every((chunk) => chunk.length <= 4)).toBe(true);
    expect(chunks.join('')).toBe('0abcdexyz😀w');
    expect(chunks).toEqual(['0', 'abcd', 'e', 'xyz', '😀w']);
  });
});
