import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type ServedFile = { body: Buffer; status?: number };

export type FileServer = {
  url: (path: string) => string;
  /** The next request for `path` sends only `bytes` bytes and then drops the connection. */
  cutNext: (path: string, bytes: number) => void;
  /** The next requests for `path` stall after `bytes` bytes until `release()` (or close). */
  requests: { path: string; range: string | undefined }[];
  set: (path: string, file: ServedFile) => void;
  close: () => Promise<void>;
};

/** A real node:http server on 127.0.0.1 that honours Range and can cut a download mid-way. */
export async function startFileServer(files: Record<string, ServedFile> = {}): Promise<FileServer> {
  const served = new Map(Object.entries(files));
  const cuts = new Map<string, number>();
  const requests: FileServer['requests'] = [];

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({ path, range: req.headers.range });
    const file = served.get(path);
    if (!file) {
      res.writeHead(404, 'Not Found').end();
      return;
    }
    if (file.status && file.status !== 200) {
      res.writeHead(file.status).end('nope');
      return;
    }
    const total = file.body.length;
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (start >= total) {
        res.writeHead(416, { 'content-range': `bytes */${total}` }).end();
        return;
      }
      res.writeHead(206, { 'content-length': total - start, 'content-range': `bytes ${start}-${total - 1}/${total}` });
    } else {
      res.writeHead(200, { 'content-length': total });
    }
    const cut = cuts.get(path);
    if (cut !== undefined) {
      cuts.delete(path);
      res.write(file.body.subarray(start, start + cut), () => {
        // Give the bytes a moment to leave, then drop the connection as a flaky network would.
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    res.end(file.body.subarray(start));
  };

  const server: Server = createServer({ noDelay: true }, handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    cutNext: (path, bytes) => cuts.set(path, bytes),
    requests,
    set: (path, file) => served.set(path, file),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
