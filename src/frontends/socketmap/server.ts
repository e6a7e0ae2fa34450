/**
 * Postfix socketmap listener (sending side): sockets, limits and timeouts around the codec and the
 * tables, nothing else. Lookups are synchronous, so replies leave in request order by construction.
 * Postfix's socketmap client (dict_sockmap) keeps a connection 10 s idle and 100 s at most, waits
 * 100 s for a reply and sends requests of 100 000 bytes at most: our limits are those plus a grace.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from '../../observe/metrics.js';
import { createAdmission } from '../../net/admission.js';
import { formatAddress, listen, parseListenAddress, type ListenOptions } from '../../net/listen.js';
import type { WhitelistIndex } from '../../whitelist/index.js';
import { DEFAULT_SOCKETMAP_LIMITS, SocketmapCodecError, SocketmapDecoder, encodeReply, type SocketmapLimits, type SocketmapRequest } from './codec.js';
import type { SocketmapLookup, SocketmapTables } from './maps.js';

export interface SocketmapServerOptions {
  readonly limits?: SocketmapLimits;
  readonly idleTimeoutMs?: number;
  /** Longest time from the first byte of a request to its last. */
  readonly requestTimeoutMs?: number;
  readonly maxConnections?: number;
  readonly unixMode?: ListenOptions['unixMode'];
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly tables: SocketmapTables;
  /** The list in force, or null (every lookup is then TEMP). */
  readonly currentIndex: () => WhitelistIndex | null;
}

export const SOCKETMAP_SERVER_DEFAULTS = Object.freeze({
  limits: DEFAULT_SOCKETMAP_LIMITS,
  idleTimeoutMs: 330_000,
  requestTimeoutMs: 110_000,
  maxConnections: 1000,
});

export interface SocketmapServer {
  readonly address: string;
  /** Stops accepting, ends idle connections, lets requests being received finish, destroys the rest after deadlineMs. */
  close(deadlineMs: number): Promise<void>;
}

interface Connection {
  readonly id: number;
  readonly remote: string;
  readonly socket: net.Socket;
  readonly decoder: SocketmapDecoder;
  requestTimer: NodeJS.Timeout | null;
  draining: boolean;
}

export async function startSocketmapServer(listenAddress: string, options: SocketmapServerOptions): Promise<SocketmapServer> {
  const d = SOCKETMAP_SERVER_DEFAULTS;
  const limits = options.limits ?? d.limits;
  const idleTimeoutMs = options.idleTimeoutMs ?? d.idleTimeoutMs;
  const requestTimeoutMs = options.requestTimeoutMs ?? d.requestTimeoutMs;
  const { logger, metrics, tables, currentIndex } = options;
  new SocketmapDecoder(limits); // validates the limits at start-up
  const parsed = parseListenAddress(listenAddress);
  const log = logger.child({ frontend: 'socketmap' });
  const active = metrics.connectionsActive.labels({ frontend: 'socketmap' });
  const admission = createAdmission('socketmap', options.maxConnections ?? d.maxConnections, parsed.kind === 'unix', metrics, log);
  const connections = new Set<Connection>();
  // Every answer but mssante-domain's is one of a few shared objects: encode each once.
  const encoded = new WeakMap<SocketmapLookup, Buffer>();
  let nextId = 0;
  let closing: Promise<void> | null = null;
  let onLastGone: (() => void) | null = null;

  // Half-open: at the peer's FIN the decoder says whether a request was cut, then we end our side.
  const server = net.createServer({ allowHalfOpen: true });
  server.on('connection', (socket: net.Socket) => {
    if (!admission.admit(socket, connections.size)) return;
    const conn: Connection = { id: ++nextId, remote: admission.remoteOf(socket), socket, decoder: new SocketmapDecoder(limits), requestTimer: null, draining: false };
    connections.add(conn);
    active.inc();
    socket.setNoDelay(true);
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
    socket.on('data', (chunk: Buffer) => onData(conn, chunk));
    socket.on('end', () => {
      if (socket.writableEnded) return;
      try {
        conn.decoder.end();
      } catch (err) {
        fail(conn, err);
        return;
      }
      socket.end();
    });
    socket.on('drain', () => socket.resume());
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ conn: conn.id, remote: conn.remote, code: err.code }, 'socketmap connection error'));
    socket.on('close', () => {
      connections.delete(conn);
      active.dec();
      stopTimer(conn);
      if (connections.size === 0) onLastGone?.();
    });
  });
  server.on('error', (err) => log.error({ err }, 'socketmap listener error'));
  const bound = await listen(server, parsed, { unixMode: options.unixMode });
  const address = formatAddress(bound.address);
  log.info({ address }, 'socketmap listener ready');

  function onData(conn: Connection, chunk: Buffer): void {
    // Ended by us (protocol error, drain): a late request is dropped, Postfix retries on a new connection.
    if (conn.socket.destroyed || conn.socket.writableEnded) return;
    let requests: SocketmapRequest[];
    try {
      requests = conn.decoder.push(chunk);
    } catch (err) {
      // Requests completed before the fault are answered, in order, before the close.
      if (err instanceof SocketmapCodecError && err.completed.length > 0) answer(conn, err.completed);
      fail(conn, err);
      return;
    }
    if (requests.length > 0) {
      stopTimer(conn);
      answer(conn, requests);
    }
    if (conn.decoder.midRequest) conn.requestTimer ??= setTimeout(() => onRequestTimeout(conn), requestTimeoutMs);
    else if (conn.draining && !conn.socket.writableEnded) conn.socket.end();
  }

  function answer(conn: Connection, requests: readonly SocketmapRequest[]): void {
    const index = currentIndex();
    const debug = log.isLevelEnabled('debug');
    const replies: Buffer[] = [];
    for (const { name, key } of requests) {
      const found = tables.lookup(name, key, index);
      metrics.countSocketmapLookup(found.map, found.result);
      // The key is an address or a domain: traced at debug level only.
      if (debug) log.debug({ conn: conn.id, map: found.map, key, result: found.result }, 'socketmap lookup');
      let bytes = encoded.get(found);
      if (bytes === undefined) {
        bytes = encodeReply(found.reply);
        encoded.set(found, bytes);
      }
      replies.push(bytes);
    }
    if (!conn.socket.write(replies.length === 1 ? (replies[0] as Buffer) : Buffer.concat(replies))) conn.socket.pause();
  }

  function fail(conn: Connection, err: unknown): void {
    if (err instanceof SocketmapCodecError) {
      log.warn({ conn: conn.id, remote: conn.remote, kind: err.kind }, 'socketmap protocol error, connection closed');
      metrics.protocolErrors.inc({ frontend: 'socketmap', kind: err.kind });
      // What was answered is flushed first; nothing more is read.
      conn.socket.end();
      conn.socket.once('finish', () => conn.socket.destroy());
    } else {
      log.error({ conn: conn.id, remote: conn.remote, err }, 'socketmap connection failed, closed');
      conn.socket.destroy();
    }
  }

  function onRequestTimeout(conn: Connection): void {
    conn.requestTimer = null;
    if (conn.socket.destroyed) return;
    log.warn({ conn: conn.id, remote: conn.remote, kind: 'request_timeout', pendingBytes: conn.decoder.pendingBytes }, 'socketmap request not completed in time, connection closed');
    metrics.protocolErrors.inc({ frontend: 'socketmap', kind: 'request_timeout' });
    conn.socket.destroy();
  }

  function stopTimer(conn: Connection): void {
    if (conn.requestTimer !== null) {
      clearTimeout(conn.requestTimer);
      conn.requestTimer = null;
    }
  }

  function close(deadlineMs: number): Promise<void> {
    closing ??= (async () => {
      const listenerClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      const gone = new Promise<void>((resolve) => {
        onLastGone = resolve;
        if (connections.size === 0) resolve();
      });
      for (const conn of connections) {
        conn.draining = true;
        if (!conn.decoder.midRequest && !conn.socket.writableEnded) conn.socket.end();
      }
      const deadline = setTimeout(() => {
        for (const conn of connections) conn.socket.destroy();
      }, deadlineMs);
      try {
        await Promise.all([listenerClosed, gone]);
      } finally {
        clearTimeout(deadline);
        await bound.release();
      }
      log.info({ address }, 'socketmap listener closed');
    })();
    return closing;
  }

  return { address, close };
}
