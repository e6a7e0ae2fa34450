/**
 * The one listener skeleton of every stream frontend (policy, Milter, socketmap): admission
 * (connection limit, heap watermark), the connection set and its gauge, the idle and request timers,
 * the per-connection byte budget, protocol errors (logged with structured fields, counted, socket
 * destroyed) and the draining close. A frontend brings a codec and a session; it never touches a
 * net.Server.
 *
 * Usage:
 *   const server = await startStreamServer('127.0.0.1:10040', {
 *     frontend: 'policy', logger, metrics,
 *     limits: { maxConnections, idleTimeoutMs, requestTimeoutMs, maxConnectionBytes },
 *     createSession: (conn) => ({ onData(chunk) { ...conn.write(reply)...; return completed > 0 }, ... }),
 *   });
 *   await server.close(deadlineMs);
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Frontend, Metrics } from '../observe/metrics.js';
import { createAdmission } from './admission.js';
import { formatAddress, listen, parseListenAddress, type ListenOptions } from './listen.js';

export interface StreamLimits {
  /** Connections beyond this are accepted then closed at once, and counted. */
  readonly maxConnections: number;
  /** Close a connection silent this long (socket inactivity). */
  readonly idleTimeoutMs: number;
  /** Longest time from the first byte of a request (packet, netstring) to its end. */
  readonly requestTimeoutMs: number;
  /**
   * Most bytes a connection may make the daemon keep (its session's heldBytes()), checked after
   * every chunk: past it the connection is closed as `connection_budget_exceeded`.
   */
  readonly maxConnectionBytes: number;
  /** Refuse new connections while the V8 heap is above this percentage of its limit (see admission.ts). */
  readonly heapWatermarkPercent: number;
}

/** What a session may do with its connection. */
export interface StreamConnection {
  /** 1, 2, ... per listener. */
  readonly id: number;
  /** `ip:port`, `[v6]:port` or `unix`. */
  readonly remote: string;
  /** True once close() has begun: finish what is in flight, then end. */
  readonly draining: boolean;
  /** Writes (stops reading until flushed when the peer does not read). */
  write(bytes: Buffer): void;
  /** Flushes what is written, then FIN. Data the peer sends afterwards destroys the connection. */
  end(): void;
  /** Protocol error: logged (structured fields only), counted in protocol_errors_total{frontend,kind}, destroyed. */
  fail(kind: string, level?: 'warn' | 'info', fields?: Record<string, unknown>): void;
  /** Counts a protocol anomaly in protocol_errors_total{frontend,kind} without closing. */
  count(kind: string): void;
}

/** One connection's protocol: a codec plus its state. Thrown errors close the connection (logged as errors). */
export interface StreamSession {
  /** A chunk of bytes. Returns true when at least one request completed (restarts the request clock). */
  onData(chunk: Buffer): boolean;
  /** The peer ended its side (only with allowHalfOpen). Default: end ours. */
  onEnd?(): void;
  /** Bytes of a request received but not complete: while > 0 the request timer runs. */
  pendingBytes(): number;
  /** Everything this connection makes the daemon keep (buffers, partial frames, kept state). */
  heldBytes(): number;
  /** True when ending the connection now loses nothing (used when draining). */
  idle(): boolean;
  /** The idle timeout fired. Default: a debug line, then the socket is destroyed (not counted). */
  onIdleTimeout?(): void;
}

export interface StreamServerOptions {
  readonly frontend: Frontend;
  readonly limits: StreamLimits;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly createSession: (connection: StreamConnection) => StreamSession;
  /** Keep reading after the peer's FIN (Exim's readsocket shuts down its side, then reads). Default false. */
  readonly allowHalfOpen?: boolean;
  /** TCP keep-alive probe delay; off when absent. */
  readonly keepAliveMs?: number;
  /** Mode of a unix socket file (default 0660). */
  readonly unixMode?: ListenOptions['unixMode'];
}

export interface StreamServer {
  /** `host:port` actually bound (the real port when 0 was asked), or `unix:/path`. */
  readonly address: string;
  /**
   * Stops accepting, ends the connections whose session is idle (the others when they become idle),
   * destroys what is left after `deadlineMs`, removes the unix socket file.
   */
  close(deadlineMs: number): Promise<void>;
}

interface Connection extends StreamConnection {
  draining: boolean;
  readonly socket: net.Socket;
  session: StreamSession | null;
  requestTimer: NodeJS.Timeout | null;
}

export async function startStreamServer(listenAddress: string, options: StreamServerOptions): Promise<StreamServer> {
  const { frontend, limits, metrics } = options;
  for (const key of ['maxConnections', 'idleTimeoutMs', 'requestTimeoutMs', 'maxConnectionBytes', 'heapWatermarkPercent'] as const) {
    if (!Number.isSafeInteger(limits[key]) || limits[key] < 1) throw new RangeError(`${key} must be a positive integer, got ${limits[key]}`);
  }
  const parsed = parseListenAddress(listenAddress);
  const log = options.logger.child({ frontend });
  const active = metrics.connectionsActive.labels({ frontend });
  const connections = new Set<Connection>();
  let nextId = 0;
  let draining = false;
  let closing: Promise<void> | null = null;
  let onLastConnectionGone: (() => void) | null = null;

  const server = net.createServer({ allowHalfOpen: options.allowHalfOpen === true });
  const admission = createAdmission(frontend, limits.maxConnections, parsed.kind === 'unix', metrics, log, {
    heapWatermarkPercent: limits.heapWatermarkPercent,
  });
  server.on('connection', onConnection);
  // Accept errors (EMFILE...) must not kill the daemon.
  server.on('error', (err) => log.error({ err }, `${frontend} listener error`));

  const bound = await listen(server, parsed, { unixMode: options.unixMode });
  const address = formatAddress(bound.address);
  log.info({ address }, `${frontend} listener ready`);

  function onConnection(socket: net.Socket): void {
    if (!admission.admit(socket, connections.size)) return;
    const conn: Connection = {
      id: ++nextId,
      remote: admission.remoteOf(socket),
      socket,
      draining,
      session: null,
      requestTimer: null,
      write(bytes) {
        if (!socket.write(bytes)) socket.pause();
      },
      end() {
        if (!socket.writableEnded) socket.end();
      },
      fail: (kind, level = 'warn', fields = {}) => fail(conn, kind, level, fields),
      count: (kind) => metrics.protocolErrors.inc({ frontend, kind }),
    };
    connections.add(conn);
    active.inc();
    socket.setNoDelay(true);
    if (options.keepAliveMs !== undefined) socket.setKeepAlive(true, options.keepAliveMs);
    socket.setTimeout(limits.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => onData(conn, chunk));
    socket.on('end', () => onEnd(conn));
    socket.on('timeout', () => onIdle(conn));
    // A peer that does not read our replies: stop reading until they are flushed.
    socket.on('drain', () => socket.resume());
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ conn: conn.id, remote: conn.remote, code: err.code }, `${frontend} connection error`));
    socket.on('close', () => {
      connections.delete(conn);
      active.dec();
      stopRequestTimer(conn);
      log.debug({ conn: conn.id, remote: conn.remote }, `${frontend} connection closed`);
      if (connections.size === 0) onLastConnectionGone?.();
    });
    try {
      conn.session = options.createSession(conn);
    } catch (err) {
      crash(conn, err);
      return;
    }
    log.debug({ conn: conn.id, remote: conn.remote }, `${frontend} connection opened`);
  }

  function onData(conn: Connection, chunk: Buffer): void {
    const { socket, session } = conn;
    if (socket.destroyed || session === null) return;
    if (socket.writableEnded) {
      // We ended this connection (QUIT, or idle while draining) and the peer sent more: it will retry elsewhere.
      log.debug({ conn: conn.id, remote: conn.remote }, `${frontend} data after our end, dropped`);
      socket.destroy();
      return;
    }
    let progressed: boolean;
    try {
      progressed = session.onData(chunk);
    } catch (err) {
      crash(conn, err);
      return;
    }
    if (socket.destroyed) return;
    const held = session.heldBytes();
    if (held > limits.maxConnectionBytes) {
      fail(conn, 'connection_budget_exceeded', 'warn', { heldBytes: held, maxConnectionBytes: limits.maxConnectionBytes });
      return;
    }
    if (socket.writableEnded) return;
    // The clock runs from the first byte of the request still incomplete: restarted when one completes.
    if (progressed || session.pendingBytes() === 0) stopRequestTimer(conn);
    if (session.pendingBytes() > 0) {
      conn.requestTimer ??= setTimeout(() => onRequestTimeout(conn), limits.requestTimeoutMs);
    } else if (conn.draining && session.idle()) {
      socket.end();
    }
  }

  function onEnd(conn: Connection): void {
    if (conn.socket.destroyed || conn.session === null) return;
    stopRequestTimer(conn);
    try {
      if (conn.session.onEnd !== undefined) conn.session.onEnd();
      else conn.end();
    } catch (err) {
      crash(conn, err);
    }
  }

  function onIdle(conn: Connection): void {
    if (conn.socket.destroyed) return;
    if (conn.session?.onIdleTimeout !== undefined) {
      conn.session.onIdleTimeout();
      return;
    }
    log.debug({ conn: conn.id, remote: conn.remote }, `${frontend} connection idle, closing`);
    conn.socket.destroy();
  }

  function onRequestTimeout(conn: Connection): void {
    conn.requestTimer = null;
    // Closed meanwhile (idle timeout, error): its 'close' has not cleared this timer yet.
    if (conn.socket.destroyed) return;
    fail(conn, 'request_timeout', 'warn', { pendingBytes: conn.session?.pendingBytes() ?? 0 });
  }

  function stopRequestTimer(conn: Connection): void {
    if (conn.requestTimer !== null) {
      clearTimeout(conn.requestTimer);
      conn.requestTimer = null;
    }
  }

  function fail(conn: Connection, kind: string, level: 'warn' | 'info', fields: Record<string, unknown>): void {
    // Already closed by another timer or error: one close, one count.
    if (conn.socket.destroyed) return;
    // Structured fields only: the offending bytes are never logged.
    log[level]({ conn: conn.id, remote: conn.remote, kind, ...fields }, `${frontend} protocol error, connection closed`);
    metrics.protocolErrors.inc({ frontend, kind });
    conn.socket.destroy();
  }

  function crash(conn: Connection, err: unknown): void {
    log.error({ conn: conn.id, remote: conn.remote, err }, `${frontend} connection failed, closed`);
    conn.socket.destroy();
  }

  function close(deadlineMs: number): Promise<void> {
    closing ??= (async () => {
      draining = true;
      const listenerClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Our own bookkeeping (gauge, timers) runs in each socket's 'close': wait for it too.
      const connectionsGone = new Promise<void>((resolve) => {
        onLastConnectionGone = resolve;
        if (connections.size === 0) resolve();
      });
      for (const conn of connections) {
        conn.draining = true;
        // Idle: FIN now (the MTA reconnects for its next question). Busy: onData ends it once idle.
        if (conn.session?.idle() === true && !conn.socket.writableEnded) conn.socket.end();
      }
      const deadline = setTimeout(() => {
        if (connections.size > 0) log.warn({ connections: connections.size }, `${frontend} drain deadline reached, destroying connections`);
        for (const conn of connections) conn.socket.destroy();
      }, deadlineMs);
      try {
        await Promise.all([listenerClosed, connectionsGone]);
      } finally {
        clearTimeout(deadline);
        await bound.release();
      }
      log.info({ address }, `${frontend} listener closed`);
    })();
    return closing;
  }

  return { address, close };
}
