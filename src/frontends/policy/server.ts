/**
 * Postfix policy listener: sockets, limits and timeouts around the codec, nothing else. Bytes are
 * parsed by codec.ts only; the answer comes from `handle`, synchronously, so replies leave in request
 * order by construction.
 *
 * Exim's `${readsocket}` writes its request, shuts down its side and reads to EOF: sockets are
 * half-open capable, and at EOF the pending request (with or without its empty line) is answered
 * before the socket is ended.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from '../../observe/metrics.js';
import { POLICY_ACTIONS } from '../../trust/reasons.js';
import { createAdmission } from '../../net/admission.js';
import { formatAddress, listen, parseListenAddress, type ListenOptions } from '../../net/listen.js';
import { DEFAULT_POLICY_LIMITS, PolicyCodecError, PolicyDecoder, encodeReply, type PolicyLimits, type PolicyRequest } from './codec.js';

export interface ConnectionInfo {
  readonly id: number;
  /** `ip:port` of the peer, or `unix` for a unix socket. */
  readonly remote: string;
}

export interface PolicyServerOptions {
  readonly limits?: PolicyLimits;
  /** Close a connection silent this long. */
  readonly idleTimeoutMs?: number;
  /** Longest time from the first byte of a request to its end. */
  readonly requestTimeoutMs?: number;
  /** Connections beyond this are accepted then closed at once, and counted. */
  readonly maxConnections?: number;
  /** Mode, owner and group of a unix socket file (default 0660, the daemon's user and group). */
  readonly unixSocket?: ListenOptions;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The action for one request (`DUNNO`, `550 5.7.1 ...`). If it throws: logged, answered with the internal_error action. */
  readonly handle: (request: PolicyRequest, connection: ConnectionInfo) => string;
}

/**
 * Derived from Postfix's own client settings, plus a grace, so that Postfix is the one that gives up
 * or closes first: smtpd_policy_service_max_idle = 300 s, smtpd_policy_service_timeout = 100 s.
 */
export const POLICY_SERVER_DEFAULTS = Object.freeze({
  limits: DEFAULT_POLICY_LIMITS,
  idleTimeoutMs: 330_000,
  requestTimeoutMs: 110_000,
  maxConnections: 1000,
});

export interface PolicyServer {
  /** `host:port` actually bound (the real port when 0 was asked), or `unix:/path`. */
  readonly address: string;
  /**
   * Stops accepting, ends idle connections, lets requests being received finish and be answered,
   * destroys what is left after `deadlineMs` milliseconds, removes the unix socket file.
   */
  close(deadlineMs: number): Promise<void>;
}

/** Extra protocol error kind of the server (the codec's kinds come from PolicyCodecError). */
export type PolicyServerErrorKind = 'request_timeout';

interface Connection {
  readonly info: ConnectionInfo;
  readonly socket: net.Socket;
  readonly decoder: PolicyDecoder;
  requestTimer: NodeJS.Timeout | null;
  draining: boolean;
}


export async function startPolicyServer(listenAddress: string, options: PolicyServerOptions): Promise<PolicyServer> {
  const limits = options.limits ?? POLICY_SERVER_DEFAULTS.limits;
  const idleTimeoutMs = options.idleTimeoutMs ?? POLICY_SERVER_DEFAULTS.idleTimeoutMs;
  const requestTimeoutMs = options.requestTimeoutMs ?? POLICY_SERVER_DEFAULTS.requestTimeoutMs;
  const maxConnections = options.maxConnections ?? POLICY_SERVER_DEFAULTS.maxConnections;
  const { logger, metrics, handle } = options;
  new PolicyDecoder(limits); // validates the limits now rather than at the first connection

  const parsed = parseListenAddress(listenAddress);
  const log = logger.child({ frontend: 'policy' });
  const active = metrics.connectionsActive.labels({ frontend: 'policy' });
  const connections = new Set<Connection>();
  let nextId = 0;
  let closing: Promise<void> | null = null;
  let onLastConnectionGone: (() => void) | null = null;

  const server = net.createServer({ allowHalfOpen: true });
  const admission = createAdmission('policy', maxConnections, parsed.kind === 'unix', metrics, log);
  server.on('connection', onConnection);
  // Accept errors (EMFILE...) must not kill the daemon.
  server.on('error', (err) => log.error({ err }, 'policy listener error'));

  const bound = await listen(server, parsed, options.unixSocket);
  const address = formatAddress(bound.address);
  log.info({ address }, 'policy listener ready');

  function onConnection(socket: net.Socket): void {
    if (!admission.admit(socket, connections.size)) return;
    const remote = admission.remoteOf(socket);
    const conn: Connection = {
      info: Object.freeze({ id: ++nextId, remote }),
      socket,
      decoder: new PolicyDecoder(limits),
      requestTimer: null,
      draining: false,
    };
    connections.add(conn);
    active.inc();
    socket.setNoDelay(true);
    socket.setTimeout(idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => onData(conn, chunk));
    socket.on('end', () => onEnd(conn));
    socket.on('timeout', () => {
      log.debug({ conn: conn.info.id, remote }, 'policy connection idle, closing');
      socket.destroy();
    });
    // A reader that does not keep up: stop reading until our replies are flushed.
    socket.on('drain', () => socket.resume());
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ conn: conn.info.id, remote, code: err.code }, 'policy connection error'));
    socket.on('close', () => {
      connections.delete(conn);
      active.dec();
      stopRequestTimer(conn);
      if (connections.size === 0) onLastConnectionGone?.();
    });
    log.debug({ conn: conn.info.id, remote }, 'policy connection opened');
  }

  function onData(conn: Connection, chunk: Buffer): void {
    if (conn.socket.destroyed) return;
    let requests: PolicyRequest[];
    try {
      requests = conn.decoder.push(chunk);
    } catch (err) {
      fail(conn, err);
      return;
    }
    if (requests.length > 0) {
      stopRequestTimer(conn);
      answer(conn, requests);
    }
    if (conn.decoder.pendingBytes > 0) {
      conn.requestTimer ??= setTimeout(() => onRequestTimeout(conn), requestTimeoutMs);
    } else if (conn.draining && !conn.socket.writableEnded) {
      conn.socket.end();
    }
  }

  function onEnd(conn: Connection): void {
    if (conn.socket.destroyed) return;
    stopRequestTimer(conn);
    let request: PolicyRequest | null;
    try {
      request = conn.decoder.end();
    } catch (err) {
      fail(conn, err);
      return;
    }
    if (request !== null) answer(conn, [request]);
    // Flushes the reply, then FIN; the socket closes as the peer has already ended its side.
    if (!conn.socket.writableEnded) conn.socket.end();
  }

  function answer(conn: Connection, requests: PolicyRequest[]): void {
    const { socket } = conn;
    if (socket.writableEnded) {
      // We ended an idle connection while draining and the peer sent one more request: it will retry elsewhere.
      log.debug({ conn: conn.info.id, remote: conn.info.remote }, 'policy request after shutdown, dropped');
      socket.destroy();
      return;
    }
    let reply: Buffer;
    if (requests.length === 1) {
      reply = encodeReply(decide(conn, requests[0] as PolicyRequest));
    } else {
      const replies: Buffer[] = [];
      for (const request of requests) replies.push(encodeReply(decide(conn, request)));
      reply = Buffer.concat(replies);
    }
    // One write for every reply of a chunk. encodeReply's Buffers are shared: written, never modified.
    if (!socket.write(reply)) socket.pause();
  }

  function decide(conn: Connection, request: PolicyRequest): string {
    try {
      return handle(request, conn.info);
    } catch (err) {
      log.error({ conn: conn.info.id, remote: conn.info.remote, err }, 'policy handler failed, answering internal_error');
      return POLICY_ACTIONS.internal_error;
    }
  }

  function fail(conn: Connection, err: unknown): void {
    if (err instanceof PolicyCodecError) {
      // Structured fields only: the offending bytes are never logged.
      log.warn({ conn: conn.info.id, remote: conn.info.remote, kind: err.kind }, 'policy protocol error, connection closed');
      metrics.protocolErrors.inc({ frontend: 'policy', kind: err.kind });
    } else {
      log.error({ conn: conn.info.id, remote: conn.info.remote, err }, 'policy connection failed, closed');
    }
    conn.socket.destroy();
  }

  function onRequestTimeout(conn: Connection): void {
    conn.requestTimer = null;
    // Closed meanwhile (idle timeout, error): its 'close' has not cleared this timer yet.
    if (conn.socket.destroyed) return;
    const kind: PolicyServerErrorKind = 'request_timeout';
    log.warn({ conn: conn.info.id, remote: conn.info.remote, kind, pendingBytes: conn.decoder.pendingBytes }, 'policy request not completed in time, connection closed');
    metrics.protocolErrors.inc({ frontend: 'policy', kind });
    conn.socket.destroy();
  }

  function stopRequestTimer(conn: Connection): void {
    if (conn.requestTimer !== null) {
      clearTimeout(conn.requestTimer);
      conn.requestTimer = null;
    }
  }

  function close(deadlineMs: number): Promise<void> {
    closing ??= (async () => {
      const listenerClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Our own bookkeeping (metrics, timers) runs in each socket's 'close': wait for it too.
      const connectionsGone = new Promise<void>((resolve) => {
        onLastConnectionGone = resolve;
        if (connections.size === 0) resolve();
      });
      for (const conn of connections) {
        conn.draining = true;
        // Idle: FIN now (Postfix reconnects on its next request). Mid-request: onData ends it once answered.
        if (conn.decoder.pendingBytes === 0 && !conn.socket.writableEnded) conn.socket.end();
      }
      const deadline = setTimeout(() => {
        if (connections.size > 0) log.warn({ connections: connections.size }, 'policy drain deadline reached, destroying connections');
        for (const conn of connections) conn.socket.destroy();
      }, deadlineMs);
      try {
        await Promise.all([listenerClosed, connectionsGone]);
      } finally {
        clearTimeout(deadline);
        await bound.release();
      }
      log.info({ address }, 'policy listener closed');
    })();
    return closing;
  }

  return { address, close };
}

