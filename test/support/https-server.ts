/**
 * A local HTTPS server that plays the ANS whitelist endpoint, well or badly, as each test sets it.
 * node:https on 127.0.0.1:0 with a certificate from a TestPki CA; the URL names "localhost"
 * because the test PKI writes DNS names only.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { rmSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { TestPki, type Issued } from './pki.js';

export type ServeBehaviour = {
  readonly kind: 'serve';
  readonly body: Buffer | string;
  /** Honoured in If-None-Match; null sends none. */
  readonly etag?: string | null;
  /** Honoured in If-Modified-Since; null sends none. */
  readonly lastModified?: string | null;
  /** Gzip the body when the client accepts it. */
  readonly gzip?: boolean;
  /** Chunked transfer, no Content-Length. */
  readonly chunked?: boolean;
};

export type Behaviour =
  | ServeBehaviour
  /** Any status, e.g. 404 or 500. */
  | { readonly kind: 'status'; readonly status: number; readonly body?: string }
  /** `failures` answers with `status` (default 500), then `then`: the retry case. */
  | { readonly kind: 'fail-then'; readonly failures: number; readonly status?: number; readonly then: Behaviour }
  /** Reads the request and never answers. */
  | { readonly kind: 'hang' }
  /** Holds each request until `until` settles, then answers with `then`: a load that waits on the test, not on speed. */
  | { readonly kind: 'held'; readonly until: Promise<unknown>; readonly then: Behaviour }
  /** Headers at once (with Content-Length), then one byte every intervalMs (default 1000). */
  | { readonly kind: 'drip'; readonly body: Buffer | string; readonly intervalMs?: number }
  /** `bytes` bytes of filler, streamed; with or without a Content-Length. */
  | { readonly kind: 'oversize'; readonly bytes: number; readonly declareLength: boolean }
  /** Raw HTTP: declares Content-Length `declared`, sends `body`, closes. */
  | { readonly kind: 'lying-length'; readonly declared: number; readonly body: Buffer | string }
  /** A small gzip stream that inflates to `decompressedBytes` zero bytes. */
  | { readonly kind: 'gzip-bomb'; readonly decompressedBytes: number }
  /** `hops` redirects on this server (each to the next path), then `then`. */
  | { readonly kind: 'redirect'; readonly hops: number; readonly status?: number; readonly then: Behaviour }
  /** One redirect to an arbitrary Location (e.g. an http:// URL). */
  | { readonly kind: 'redirect-to'; readonly location: string; readonly status?: number };

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
}

export interface HttpsListServer {
  /** https://localhost:PORT/list.xml */
  readonly url: string;
  readonly port: number;
  /** PEM of the CA that issued the server certificate. */
  readonly caFile: string;
  readonly ca: Issued;
  /** Replaces the behaviour and resets its counters (fail-then). */
  setBehaviour(b: Behaviour): void;
  /** Every request received, redirects included, in order. */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

export const LIST_PATH = '/list.xml';
const FILLER = Buffer.alloc(64 * 1024, 0x41);
const bombs = new Map<number, Buffer>();

/** Gzip of n zero bytes, built in 1 MiB pieces so the test never holds n bytes at once. */
export function gzipBomb(n: number): Buffer {
  const cached = bombs.get(n);
  if (cached !== undefined) return cached;
  const piece = 1024 * 1024;
  const zeros = Buffer.alloc(piece);
  const members: Buffer[] = [];
  // Concatenated gzip members are one valid gzip stream (RFC 1952 §2.2).
  for (let left = n; left > 0; left -= piece) members.push(gzipSync(zeros.subarray(0, Math.min(piece, left)), { level: 9 }));
  const bomb = Buffer.concat(members);
  bombs.set(n, bomb);
  return bomb;
}

let serverCount = 0;

export async function startHttpsListServer(pki?: TestPki): Promise<HttpsListServer> {
  const ownPki = pki === undefined;
  const p = pki ?? new TestPki();
  const n = ++serverCount;
  const ca = p.createCa(`list-ca-${n}`, [
    ['C', 'FR'],
    ['O', 'Test IGC-Sante'],
    ['CN', `Test list CA ${n}`],
  ]);
  const leaf = p.issue(
    `list-server-${n}`,
    [
      ['C', 'FR'],
      ['O', 'Test ANS'],
      ['CN', 'localhost'],
    ],
    ca,
    {
      usage: 'server',
      dnsNames: ['localhost'],
    },
  );

  let behaviour: Behaviour = { kind: 'status', status: 503, body: 'no behaviour set' };
  let served = 0;
  const requests: RecordedRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();

  const server: Server = createServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => {
    requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers });
    res.on('error', () => {});
    req.on('error', () => {});
    const index = served++;
    // Drain the request so that its end does not wait on us.
    req.resume();
    handle(behaviour, req, res, index);
  });
  server.on('tlsClientError', () => {});
  server.on('clientError', (_e, socket: Socket) => socket.destroy());

  function handle(b: Behaviour, req: IncomingMessage, res: ServerResponse, index: number): void {
    switch (b.kind) {
      case 'serve':
        serve(b, req, res);
        return;
      case 'status':
        res.writeHead(b.status, { 'content-type': 'text/plain' }).end(b.body ?? `status ${b.status}\n`);
        return;
      case 'fail-then':
        if (index < b.failures) res.writeHead(b.status ?? 500, { 'content-type': 'text/plain' }).end('failing on purpose\n');
        else handle(b.then, req, res, index - b.failures);
        return;
      case 'hang':
        return;
      case 'held':
        void b.until.then(
          () => handle(b.then, req, res, index),
          () => handle(b.then, req, res, index),
        );
        return;
      case 'drip':
        drip(Buffer.from(b.body), b.intervalMs ?? 1000, res);
        return;
      case 'oversize':
        oversize(b.bytes, b.declareLength, res);
        return;
      case 'lying-length': {
        const socket = req.socket;
        socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: ${b.declared}\r\nConnection: close\r\n\r\n`,
        );
        socket.end(Buffer.from(b.body));
        return;
      }
      case 'gzip-bomb': {
        const bomb = gzipBomb(b.decompressedBytes);
        res
          .writeHead(200, { 'content-type': 'application/xml', 'content-encoding': 'gzip', 'content-length': bomb.length })
          .end(bomb);
        return;
      }
      case 'redirect': {
        const hop = /^\/hop\/(\d+)$/.exec(req.url ?? '');
        const current = hop?.[1] === undefined ? 0 : Number(hop[1]);
        if (current >= b.hops) handle(b.then, req, res, index);
        else res.writeHead(b.status ?? 302, { location: `/hop/${current + 1}` }).end();
        return;
      }
      case 'redirect-to':
        res.writeHead(b.status ?? 302, { location: b.location }).end();
        return;
    }
  }

  function serve(b: ServeBehaviour, req: IncomingMessage, res: ServerResponse): void {
    const etag = b.etag ?? null;
    const lastModified = b.lastModified ?? null;
    const validators: Record<string, string> = {};
    if (etag !== null) validators.etag = etag;
    if (lastModified !== null) validators['last-modified'] = lastModified;
    const inm = req.headers['if-none-match'];
    const ims = req.headers['if-modified-since'];
    // RFC 9110 §13.2.2: If-None-Match wins; If-Modified-Since only without it.
    const unchanged =
      inm !== undefined
        ? etag !== null && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')
        : ims !== undefined && lastModified !== null && Date.parse(ims) >= Date.parse(lastModified);
    if (unchanged) {
      res.writeHead(304, validators).end();
      return;
    }
    let body = Buffer.from(b.body);
    const headers: Record<string, string | number> = { 'content-type': 'application/xml', ...validators };
    if (b.gzip === true && /\bgzip\b/.test(req.headers['accept-encoding'] ?? '')) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
    }
    if (b.chunked === true) {
      res.writeHead(200, headers);
      for (let i = 0; i < body.length; i += 4096) res.write(body.subarray(i, i + 4096));
      res.end();
    } else {
      res.writeHead(200, { ...headers, 'content-length': body.length }).end(body);
    }
  }

  function drip(body: Buffer, intervalMs: number, res: ServerResponse): void {
    res.writeHead(200, { 'content-type': 'application/xml', 'content-length': body.length });
    res.flushHeaders();
    let i = 0;
    const tick = (): void => {
      if (res.destroyed || i >= body.length) {
        if (!res.destroyed) res.end();
        return;
      }
      res.write(body.subarray(i, i + 1));
      i += 1;
      const t = setTimeout(() => {
        timers.delete(t);
        tick();
      }, intervalMs);
      timers.add(t);
    };
    tick();
  }

  function oversize(bytes: number, declareLength: boolean, res: ServerResponse): void {
    res.writeHead(
      200,
      declareLength ? { 'content-type': 'application/xml', 'content-length': bytes } : { 'content-type': 'application/xml' },
    );
    let left = bytes;
    const pump = (): void => {
      while (left > 0 && !res.destroyed) {
        const chunk = FILLER.subarray(0, Math.min(FILLER.length, left));
        left -= chunk.length;
        if (!res.write(chunk)) {
          res.once('drain', pump);
          return;
        }
      }
      if (!res.destroyed) res.end();
    };
    pump();
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `https://localhost:${port}${LIST_PATH}`,
    port,
    caFile: ca.certPath,
    ca,
    requests,
    setBehaviour(b: Behaviour): void {
      behaviour = b;
      served = 0;
    },
    async close(): Promise<void> {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (ownPki) rmSync(p.dir, { recursive: true, force: true });
    },
  };
}
