import type { Writable } from 'node:stream';

export interface SseMessage {
  /** `id:` line; EventSource sends the last one back as Last-Event-ID when it reconnects */
  id?: string;
  /** `event:` line; EventSource dispatches it to `addEventListener(event, ...)` */
  event?: string;
  data: unknown;
}

/** A slow reader is cut once this much is waiting in its socket buffer; it reconnects and resyncs. */
export const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * How a heartbeat is framed: `event`, a `heartbeat` event with the time (the event stream's clients listen for it);
 * `comment`, a `: heartbeat` comment line, which SSE clients skip, for data-only streams (the OpenAI-compatible
 * gateway's, whose clients would take any `data:` line for a chunk).
 */
export type SseHeartbeat = 'event' | 'comment';

/**
 * One Server-Sent Events response, the one writer of every SSE stream (event stream, gateway): frames messages (data
 * as one JSON line, so no payload can inject fields), sends a heartbeat on an interval so both sides and proxies
 * notice a dead link, cuts a reader whose socket buffer passed MAX_BUFFERED_BYTES, and ends cleanly once.
 */
export class SseConnection {
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  constructor(
    private readonly out: Writable,
    private readonly heartbeatMs: number,
    heartbeat: SseHeartbeat = 'event',
  ) {
    out.on('close', () => this.close());
    out.on('error', () => this.close());
    if (heartbeatMs > 0) {
      const beat = heartbeat === 'event' ? () => this.send({ event: 'heartbeat', data: { at: new Date().toISOString() } }) : () => this.write(': heartbeat\n\n');
      this.timer = setInterval(beat, heartbeatMs);
      this.timer.unref();
    }
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Tells EventSource how long to wait before reconnecting. */
  retry(ms: number): void {
    this.write(`retry: ${Math.round(ms)}\n\n`);
  }

  send(message: SseMessage): void {
    let frame = '';
    if (message.id !== undefined) frame += `id: ${singleLine(message.id)}\n`;
    if (message.event !== undefined) frame += `event: ${singleLine(message.event)}\n`;
    frame += `data: ${JSON.stringify(message.data)}\n\n`;
    this.write(frame);
  }

  /** A `data:` line as it is, for a sentinel that is not JSON (OpenAI's `data: [DONE]`). */
  sendLiteral(data: string): void {
    this.write(`data: ${singleLine(data)}\n\n`);
  }

  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.push(listener);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (!this.out.writableEnded) this.out.end();
    for (const listener of this.closeListeners.splice(0)) listener();
  }

  private write(text: string): void {
    if (this.closed) return;
    // A response destroyed or ended by someone else (the client went away) takes no more writes.
    if (this.out.writableLength > MAX_BUFFERED_BYTES || this.out.destroyed || this.out.writableEnded) {
      this.close();
      return;
    }
    this.out.write(text);
  }
}

function singleLine(value: string): string {
  return value.replace(/[\r\n]/g, ' ');
}
