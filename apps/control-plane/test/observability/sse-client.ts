import { get as httpGet, type IncomingMessage } from 'node:http';

/** A minimal Server-Sent Events reader over fetch, for tests (parses id/event/data/retry and comment lines). */
export interface SseFrame {
  id?: string;
  event?: string;
  data?: string;
  retry?: number;
}

export interface SseStream {
  status: number;
  headers: Headers;
  frames: SseFrame[];
  /** resolves when the server ends the stream */
  ended: Promise<void>;
  /** the first frame (already received or coming) matching `match` */
  next(match: (frame: SseFrame) => boolean, timeoutMs?: number): Promise<SseFrame>;
  close(): void;
}

/**
 * Opens a stream over node:http with its own socket (no pool): fetch's pool opens a spare connection that outlives
 * an aborted stream and would hold the server's shutdown for seconds.
 */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpGet(url, { agent: false, headers: { accept: 'text/event-stream', ...headers } }, resolve);
    req.on('error', reject);
  });
  const frames: SseFrame[] = [];
  const waiters: { match: (f: SseFrame) => boolean; resolve: (f: SseFrame) => void }[] = [];
  const push = (frame: SseFrame) => {
    frames.push(frame);
    for (const w of [...waiters]) {
      if (w.match(frame)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(frame);
      }
    }
  };
  const ended = (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const frame: SseFrame = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'id') frame.id = value;
            else if (field === 'event') frame.event = value;
            else if (field === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
            else if (field === 'retry') frame.retry = Number(value);
          }
          push(frame);
        }
      }
    } catch {
      // destroyed by close()
    }
  })();
  return {
    status: res.statusCode ?? 0,
    headers: new Headers(Object.entries(res.headers).flatMap(([k, v]) => (v === undefined ? [] : [[k, String(v)] as [string, string]]))),
    frames,
    ended,
    next(match, timeoutMs = 10_000) {
      const found = frames.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(frames.slice(-5))}`)), timeoutMs);
        waiters.push({
          match,
          resolve: (f) => {
            clearTimeout(timer);
            resolve(f);
          },
        });
      });
    },
    close: () => res.destroy(),
  };
}
