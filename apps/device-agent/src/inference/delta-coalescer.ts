import { LIMITS } from '@flotilla/protocol';

/** How streamed text is grouped into `inferenceResponse` chunks ([P-3.7]). */
export type StreamingSettings = {
  /** Longest a buffered delta waits, from the first one buffered. 0: every delta is its own chunk. */
  flushIntervalMs: number;
  /** Deltas (about one token each) per chunk at most. 1: every delta is its own chunk. */
  maxTokensPerChunk: number;
};

export type DeltaCoalescerOptions = StreamingSettings & {
  /**
   * Sends one chunk's text, the number of tokens it came from and their ids (absent when any delta in it came without
   * ids); called in order, never with an empty string.
   */
  emit: (text: string, tokens: number, ids?: readonly number[]) => void;
  /** Longest text of one chunk in UTF-16 code units (the protocol's delta bound, [P-1.4]). */
  maxChunkLength?: number;
};

/**
 * Merges a generation's text deltas into fewer chunks: one MQTT message per token was most of the gateway's
 * per-token cost. The first delta goes out at once so time to first token does not grow; later ones are buffered
 * until `flushIntervalMs` has passed since the first buffered one or `maxTokensPerChunk` have accumulated. The owner
 * calls `flush()` on cancel and `close()` before the terminal result or error, so no text is held back or sent late.
 */
export class DeltaCoalescer {
  private readonly buffer: string[] = [];
  private bufferedLength = 0;
  private bufferedTokens = 0;
  /** ids of the buffered deltas; undefined once a delta came without them */
  private bufferedIds: number[] | undefined = [];
  private timer: NodeJS.Timeout | undefined;
  private sentFirst = false;
  private closed = false;
  private readonly passthrough: boolean;
  private readonly maxChunkLength: number;

  constructor(private readonly options: DeltaCoalescerOptions) {
    this.passthrough = options.flushIntervalMs <= 0 || options.maxTokensPerChunk <= 1;
    this.maxChunkLength = Math.max(2, options.maxChunkLength ?? LIMITS.deltaLength);
  }

  /** Deltas waiting to be sent. */
  get pending(): number {
    return this.buffer.length;
  }

  /** `tokens`: how many tokens the text came from (about one per delta). */
  push(text: string, tokens = 1, ids?: readonly number[]): void {
    if (this.closed || text === '') return;
    if (!this.sentFirst || this.passthrough) {
      this.sentFirst = true;
      this.send(text, tokens, ids);
      return;
    }
    if (this.bufferedLength + text.length > this.maxChunkLength || (this.bufferedIds && ids && this.bufferedIds.length + ids.length > LIMITS.chunkTokenIds)) this.flush();
    this.buffer.push(text);
    this.bufferedLength += text.length;
    this.bufferedTokens += tokens;
    if (this.bufferedIds && ids) this.bufferedIds.push(...ids);
    else this.bufferedIds = undefined;
    if (this.buffer.length >= this.options.maxTokensPerChunk) {
      this.flush();
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.options.flushIntervalMs);
      // Never keeps the process alive on its own: close() runs before every terminal message.
      this.timer.unref();
    }
  }

  /** Sends what is buffered now, as one chunk. */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.buffer.length === 0) return;
    const text = this.buffer.join('');
    const tokens = this.bufferedTokens;
    const ids = this.bufferedIds;
    this.buffer.length = 0;
    this.bufferedLength = 0;
    this.bufferedTokens = 0;
    this.bufferedIds = [];
    this.send(text, tokens, ids);
  }

  /** Flushes and ignores anything pushed afterwards (nothing may follow the terminal message). */
  close(): void {
    this.flush();
    this.closed = true;
  }

  /** Text longer than a chunk is split; its tokens (and their ids) go with the last piece. */
  private send(text: string, tokens: number, ids?: readonly number[]): void {
    let rest = text;
    while (rest.length > this.maxChunkLength) {
      let cut = this.maxChunkLength;
      // Never split a surrogate pair across chunks.
      const code = rest.charCodeAt(cut - 1);
      if (code >= 0xd800 && code <= 0xdbff) cut--;
      this.options.emit(rest.slice(0, cut), 0, ids ? [] : undefined);
      rest = rest.slice(cut);
    }
    // More ids than one chunk may carry (a delta of thousands of tokens): the chunk goes without, the gateway then
    // continues after the text.
    this.options.emit(rest, tokens, ids && ids.length <= LIMITS.chunkTokenIds ? ids : undefined);
  }
}
