/**
 * aedes' in-memory persistence (aedes-persistence 11) answers every SUBSCRIBE by testing the subscription's pattern
 * against EVERY retained message: with a retained status, model-state and desired message per device, a fleet of N
 * devices subscribing costs O(N²) topic matches (6.5 s of a 2,000-device join's CPU, measured). A device subscribes to
 * exact topics, so an index by topic answers those in O(1); wildcard patterns (the control plane's own few) keep the
 * library's scan. Installed on the broker's persistence object; a persistence of another shape is left as it is.
 */

interface RetainedPacket {
  topic: string;
  payload: Buffer | string;
}

interface AsyncMemoryPersistence {
  storeRetained(packet: RetainedPacket): Promise<void>;
  createRetainedStream(pattern: string): AsyncIterable<unknown> | Iterable<unknown>;
  createRetainedStreamCombi(patterns: string[]): AsyncIterable<unknown> | Iterable<unknown>;
}

const isAsyncMemoryPersistence = (value: unknown): value is AsyncMemoryPersistence =>
  typeof value === 'object' &&
  value !== null &&
  ['storeRetained', 'createRetainedStream', 'createRetainedStreamCombi'].every((m) => typeof (value as Record<string, unknown>)[m] === 'function');

const hasWildcard = (pattern: string) => pattern.includes('+') || pattern.includes('#');

/** Indexes retained messages by topic on aedes' persistence (`broker.persistence`); true when installed. */
export function indexRetainedMessages(persistence: unknown): boolean {
  const inner = typeof persistence === 'object' && persistence !== null ? (persistence as { asyncPersistence?: unknown }).asyncPersistence : undefined;
  if (!isAsyncMemoryPersistence(inner)) return false;
  const byTopic = new Map<string, RetainedPacket>();
  const store = inner.storeRetained.bind(inner);
  const stream = inner.createRetainedStream.bind(inner);

  inner.storeRetained = async (packet) => {
    // The library keeps its own copy too (for wildcard patterns); both follow the same rule: empty payload = cleared.
    if (packet.payload.length === 0) byTopic.delete(packet.topic);
    else byTopic.set(packet.topic, { ...packet });
    await store(packet);
  };
  async function* matching(patterns: string[]): AsyncGenerator<unknown> {
    for (const pattern of patterns) {
      if (hasWildcard(pattern)) {
        yield* stream(pattern);
        continue;
      }
      const packet = byTopic.get(pattern);
      if (packet) yield packet;
    }
  }
  inner.createRetainedStream = (pattern) => matching([pattern]);
  inner.createRetainedStreamCombi = (patterns) => matching(patterns);
  return true;
}
