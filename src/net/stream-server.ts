/**
 * The one listener skeleton of every stream frontend (policy, Milter, socketmap): admission
 * (connection limit, heap watermark), the connection set and its gauge, the idle and request timers,
 * the per-connection byte budget, protocol errors (logged with structured fields, counted, socket
 * destroyed) and the draining close. A frontend brings a codec and a session; it never touches a
 * net.Server.
 *
 * Usage:
 *   const server = await startStreamServer('127.0.0.1:10040', {
 *     frontend: 'policy', logger, metrics, protocolErrorKinds,
 *     limits: { maxConnections, idleTimeoutMs, requestTimeoutMs, maxConnectionBytes, heapWatermarkPercent },
 *     codecFault: (err) => (err instanceof MyCodecError ? err : null),
 *     createSession: (conn) => ({
 *       decode: (chunk) => decoder.push(chunk),
 *       answer(requests) { conn.write(replies(requests)) },
 *       pendingBytes: () => decoder.pendingBytes, heldBytes: () => decoder.pendingBytes, idle: () => decoder.pendingBytes === 0,
 *     }),
 *   });
 *   await server.close(deadlineMs);
 *
 * One codec-error behaviour for every frontend, decided here: the requests the codec completed
 * before the fault are answered, in order; then one log line, one protocol_errors_total count, and
 * that connection only is closed once the answers are flushed. Every call into the session (decode,
 * answer, the idle hook, the drain's idle() check...) is guarded: a throw is logged as an error,
 * counted as `handler_failed`, and closes that connection only, never the daemon. `frontend` labels
 * the metrics and log lines (a new frontend adds its name to `ListenerFrontend` in trust/facts.ts).
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from '../observe/metrics.js';
import type { ListenerFrontend } from '../trust/facts.js';
import { createAdmission, type Admission } from './admission.js';
import { formatAddress, listen, parseListenAddress, type ListenOptions } from './listen.js';
import { createPeerUserCheck, isLoopbackAddress, type PeerUserCheck } from './peer-user.js';

function ignoreSocketError(): void {
  // A peer gone while its user is looked up: the socket is destroyed after the check.
}

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
export interface StreamConnection<K extends string = string> {
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
  /**
   * Protocol error: logged once (structured fields only), counted once in protocol_errors_total{frontend,kind},
   * then closed: what was written (the answers to the requests before the fault) is flushed first; nothing more is read.
   */
  fail(kind: K, level?: 'warn' | 'info', fields?: Record<string, unknown>): void;
  /** Counts a protocol anomaly in protocol_errors_total{frontend,kind} without closing. */
  count(kind: K): void;
}

/**
 * The protocol errors the skeleton itself reports, whatever the protocol: a request too slow, a
 * connection past its byte budget, and a session call that threw (`handler_failed`: a bug, logged as an error).
 */
export const STREAM_ERROR_KINDS = Object.freeze(['request_timeout', 'connection_budget_exceeded', 'handler_failed'] as const);

/**
 * A codec's fault as the skeleton handles it: its kind (counted), structured fields for the log line
 * (never the offending bytes), and the requests the same push completed before it (answered first).
 */
export interface CodecFault<K extends string, R> {
  readonly kind: K;
  readonly completed: readonly R[];
  readonly fields?: Readonly<Record<string, unknown>>;
}

/** What a running listener is to its owner: where it listens, and how to stop it. */
export interface ListenerHandle {
  /** `host:port` actually bound (the real port when 0 was asked), or `unix:/path`. */
  readonly address: string;
  /**
   * Stops accepting, ends the connections whose session is idle (the others when they become idle),
   * destroys what is left after `deadlineMs`, removes the unix socket file.
   */
  close(deadlineMs: number): Promise<void>;
}

/**
 * One connection's protocol: a codec plus its state. The skeleton frames with `decode`, answers with
 * `answer`; a codec fault (StreamServerOptions.codecFault) and anything thrown are handled by the skeleton.
 */
export interface StreamSession<R = unknown> {
  /** The codec: the requests a chunk completes. Throws on a protocol fault. */
  decode(chunk: Buffer): readonly R[];
  /** Writes the answers to these requests, in order (it may also end or fail the connection). */
  answer(requests: readonly R[]): void;
  /**
   * The peer ended its side (only with allowHalfOpen): the requests the end of input completes (may
   * throw a fault). They are answered, then our side is ended. Absent: our side is ended at once.
   */
  decodeEnd?(): readonly R[];
  /** Bytes of a request received but not complete: while > 0 the request timer runs. */
  pendingBytes(): number;
  /** Everything this connection makes the daemon keep (buffers, partial frames, kept state). */
  heldBytes(): number;
  /** True when ending the connection now loses nothing (used when draining). */
  idle(): boolean;
  /** The idle timeout fired. Default: a debug line, then the socket is destroyed (not counted). */
  onIdleTimeout?(): void;
}

/** What every protocol server built on this skeleton takes from the daemon, besides its own limits. */
export interface ListenerOptions {
  /** Connections beyond this are accepted then closed at once, and counted (--max-connections). */
  readonly maxConnections: number;
  /** Most bytes one connection may make the daemon keep (what is buffered for it; --max-connection-bytes). */
  readonly maxConnectionBytes: number;
  /** New connections are refused while the heap is above this percentage of its limit (--heap-watermark). */
  readonly heapWatermarkPercent: number;
  /** Mode, owner and group of a unix socket file (default 0660, the daemon's user and group). */
  readonly unixSocket?: ListenOptions;
  /** uid → name (--allowed-peer-users): a loopback TCP listener closes connections of any other local user (peer-user.ts). */
  readonly allowedPeerUsers?: ReadonlyMap<number, string>;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface StreamServerOptions<K extends string = string, R = unknown> {
  readonly frontend: ListenerFrontend;
  readonly limits: StreamLimits;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /**
   * Every protocol-error kind the frontend's codec and session report (besides STREAM_ERROR_KINDS):
   * each series of protocol_errors_total{frontend,kind} starts at 0, so a rate or an alert sees its first error.
   */
  readonly protocolErrorKinds: readonly K[];
  /** The fault when `err` is the codec's (its kind is one of protocolErrorKinds), else null (a bug: handler_failed). */
  readonly codecFault: (err: unknown) => CodecFault<K, R> | null;
  readonly createSession: (connection: StreamConnection<K>) => StreamSession<R>;
  /** Keep reading after the peer's FIN (Exim's readsocket shuts down its side, then reads). Default false. */
  readonly allowHalfOpen?: boolean;
  /** TCP keep-alive probe delay; off when absent. */
  readonly keepAliveMs?: number;
  /** Mode, owner and group of a unix socket file. */
  readonly unixSocket?: ListenOptions;
  /** uid → name: only these local users may connect (loopback TCP listeners only; empty or absent: anyone). */
  readonly allowedPeerUsers?: ReadonlyMap<number, string>;
}

/** How long a draining server waits for the question of a connection that has sent nothing yet. */
const FRESH_QUESTION_WAIT_MS = 2000;

interface Connection extends StreamConnection {
  draining: boolean;
  readonly socket: net.Socket;
  session: StreamSession | null;
  /** A protocol error or a failed call closed it (answers may still be flushing): nothing more is read or counted. */
  closing: boolean;
  requestTimer: NodeJS.Timeout | null;
  /** Nothing received yet: an MTA connects when it has a question, so this one is about to ask. */
  fresh: boolean;
}

export async function startStreamServer<K extends string, R>(
  listenAddress: string,
  options: StreamServerOptions<K, R>,
): Promise<ListenerHandle> {
  const { limits } = options;
  for (const key of [
    'maxConnections',
    'idleTimeoutMs',
    'requestTimeoutMs',
    'maxConnectionBytes',
    'heapWatermarkPercent',
  ] as const) {
    if (!Number.isSafeInteger(limits[key]) || limits[key] < 1)
      throw new RangeError(`${key} must be a positive integer, got ${limits[key]}`);
  }
  const parsed = parseListenAddress(listenAddress);
  const server = net.createServer({ allowHalfOpen: options.allowHalfOpen === true });
  const listener = new Listener(options, parsed.kind === 'unix');
  server.on('connection', (socket: net.Socket) => listener.accept(socket));
  // Accept errors (EMFILE...) must not kill the daemon.
  server.on('error', (err) => listener.log.error({ err }, `${options.frontend} listener error`));
  const bound = await listen(server, parsed, options.unixSocket);
  const address = formatAddress(bound.address);
  const notLoopback = peerUsersUnenforceable(server, parsed.kind, options.allowedPeerUsers);
  if (notLoopback !== null) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await bound.release();
    throw new Error(
      `--allowed-peer-users applies to loopback TCP listeners only: ${options.frontend} listens on ${address} (${notLoopback}); ` +
        'restrict a non-loopback port with a firewall (or listen on a unix: socket, guarded by --socket-mode/--socket-group), and leave allowed-peer-users empty',
    );
  }
  listener.log.info({ address }, `${options.frontend} listener ready`);
  let closing: Promise<void> | null = null;
  return {
    address,
    close(deadlineMs) {
      closing ??= (async () => {
        const listenerClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        try {
          await Promise.all([listenerClosed, listener.drain(deadlineMs)]);
        } finally {
          await bound.release();
        }
        listener.log.info({ address }, `${options.frontend} listener closed`);
      })();
      return closing;
    },
  };
}

/** Why the peer-user check cannot hold on this listener (null when it can, or is off). */
function peerUsersUnenforceable(
  server: net.Server,
  kind: 'tcp' | 'unix',
  allowed: ReadonlyMap<number, string> | undefined,
): string | null {
  // A unix socket's mode, owner and group decide who connects (the postfix-socket layout): not checked here.
  if (allowed === undefined || allowed.size === 0 || kind === 'unix') return null;
  const info = server.address();
  const ip = info !== null && typeof info === 'object' ? info.address : '';
  return isLoopbackAddress(ip) ? null : 'peers from other hosts have no local user';
}

/** Returned by a guarded call that threw: the connection is already closing. */
const FAILED = Symbol('session call failed');
type Guarded<T> = T | typeof FAILED;

/** The connections of one listener and what happens to them; the net.Server itself stays outside. */
class Listener {
  readonly log: Logger;
  private readonly connections = new Set<Connection>();
  private readonly admission: Admission;
  private readonly peerUsers: PeerUserCheck | null;
  /** Connections admitted but waiting for the peer-user check: they count against the limit. */
  private checking = 0;
  private readonly active: ReturnType<Metrics['connectionsActive']['labels']>;
  private nextId = 0;
  private draining = false;
  private onLastConnectionGone: (() => void) | null = null;

  constructor(
    private readonly options: StreamServerOptions,
    unix: boolean,
  ) {
    const { frontend, limits, metrics } = options;
    this.log = options.logger.child({ frontend });
    this.active = metrics.connectionsActive.labels({ frontend });
    for (const kind of [...STREAM_ERROR_KINDS, ...options.protocolErrorKinds]) metrics.protocolErrors.inc({ frontend, kind }, 0);
    this.admission = createAdmission(frontend, limits.maxConnections, unix, metrics, this.log, {
      heapWatermarkPercent: limits.heapWatermarkPercent,
    });
    const allowed = options.allowedPeerUsers;
    this.peerUsers =
      unix || allowed === undefined || allowed.size === 0 ? null : createPeerUserCheck(frontend, allowed, metrics, this.log);
  }

  accept(socket: net.Socket): void {
    if (!this.admission.admit(socket, this.connections.size + this.checking)) return;
    if (this.peerUsers === null) {
      this.open(socket);
      return;
    }
    // Nothing is read until the peer's user is known: a refused peer gets no answer at all.
    socket.pause();
    socket.on('error', ignoreSocketError);
    this.checking++;
    void this.peerUsers
      .admits(socket)
      .catch(() => false)
      .then((allowed) => {
        this.checking--;
        socket.off('error', ignoreSocketError);
        if (socket.destroyed) return;
        if (!allowed || this.draining) {
          socket.destroy();
          return;
        }
        this.open(socket);
        socket.resume();
      })
      .catch((err: unknown) => {
        this.log.error({ err }, `${this.options.frontend} connection failed after the peer-user check`);
        socket.destroy();
      });
  }

  private open(socket: net.Socket): void {
    const { frontend, limits, metrics } = this.options;
    const conn: Connection = {
      id: ++this.nextId,
      remote: this.admission.remoteOf(socket),
      socket,
      draining: this.draining,
      session: null,
      requestTimer: null,
      fresh: true,
      closing: false,
      write(bytes) {
        if (!socket.write(bytes)) socket.pause();
      },
      end() {
        if (!socket.writableEnded) socket.end();
      },
      fail: (kind, level = 'warn', fields = {}) => this.fail(conn, kind, level, fields),
      count: (kind) => metrics.protocolErrors.inc({ frontend, kind }),
    };
    this.connections.add(conn);
    this.active.inc();
    socket.setNoDelay(true);
    if (this.options.keepAliveMs !== undefined) socket.setKeepAlive(true, this.options.keepAliveMs);
    socket.setTimeout(limits.idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('end', () => this.onEnd(conn));
    socket.on('timeout', () => this.onIdle(conn));
    // A peer that does not read our replies: stop reading until they are flushed.
    socket.on('drain', () => socket.resume());
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.log.debug({ conn: conn.id, remote: conn.remote, code: err.code }, `${frontend} connection error`),
    );
    socket.on('close', () => this.onClose(conn));
    const session = this.guard(conn, 'createSession', () => this.options.createSession(conn));
    if (session === FAILED) return;
    conn.session = session;
    this.log.debug({ conn: conn.id, remote: conn.remote }, `${frontend} connection opened`);
  }

  /**
   * Runs one call into the session or the frontend: a throw is a bug there, not the peer's fault —
   * logged as an error, counted as handler_failed, and that connection (only) is destroyed.
   */
  private guard<T>(conn: Connection, call: string, fn: () => T): Guarded<T> {
    try {
      return fn();
    } catch (err) {
      return this.handlerFailed(conn, call, err);
    }
  }

  private handlerFailed(conn: Connection, call: string, err: unknown): typeof FAILED {
    if (!conn.socket.destroyed) {
      const { frontend, metrics } = this.options;
      this.log.error({ conn: conn.id, remote: conn.remote, call, err }, `${frontend} connection failed, closed`);
      metrics.protocolErrors.inc({ frontend, kind: 'handler_failed' });
      conn.closing = true;
      conn.socket.destroy();
    }
    return FAILED;
  }

  /** Frames `chunk` (null: the peer ended, decodeEnd), answers what it completed; a codec fault answers what came before it, then fails. */
  private decodeAndAnswer(conn: Connection, session: StreamSession, chunk: Buffer | null): Guarded<number> {
    // Calls made inline rather than through guard(): no closure per chunk on the hot path.
    const call = chunk === null ? 'decodeEnd' : 'decode';
    let requests: readonly unknown[];
    try {
      requests = chunk === null ? session.decodeEnd!() : session.decode(chunk);
    } catch (err) {
      const fault = this.guard(conn, 'codecFault', () => this.options.codecFault(err));
      if (fault === FAILED) return FAILED;
      if (fault === null) return this.handlerFailed(conn, call, err);
      if (fault.completed.length > 0 && this.guard(conn, 'answer', () => session.answer(fault.completed)) === FAILED)
        return FAILED;
      this.fail(conn, fault.kind, 'warn', fault.fields ?? {});
      return FAILED;
    }
    if (requests.length > 0) {
      try {
        session.answer(requests);
      } catch (err) {
        return this.handlerFailed(conn, 'answer', err);
      }
    }
    return requests.length;
  }

  private onData(conn: Connection, chunk: Buffer): void {
    const { socket, session } = conn;
    if (socket.destroyed || session === null) return;
    conn.fresh = false;
    if (socket.writableEnded || conn.closing) {
      // We ended this connection (QUIT, a protocol error, idle while draining) and the peer sent more: it will retry elsewhere.
      this.log.debug({ conn: conn.id, remote: conn.remote }, `${this.options.frontend} data after our end, dropped`);
      socket.destroy();
      return;
    }
    const completed = this.decodeAndAnswer(conn, session, chunk);
    if (completed === FAILED || socket.destroyed || conn.closing) return;
    let held: number;
    let pending: number;
    try {
      held = session.heldBytes();
      pending = session.pendingBytes();
    } catch (err) {
      this.handlerFailed(conn, 'heldBytes', err);
      return;
    }
    const { maxConnectionBytes, requestTimeoutMs } = this.options.limits;
    if (held > maxConnectionBytes) {
      this.fail(conn, 'connection_budget_exceeded', 'warn', { heldBytes: held, maxConnectionBytes });
      return;
    }
    if (socket.writableEnded) return;
    // The clock runs from the first byte of the request still incomplete: restarted when one completes.
    if (completed > 0 || pending === 0) this.stopRequestTimer(conn);
    if (pending > 0) {
      conn.requestTimer ??= setTimeout(() => this.onRequestTimeout(conn), requestTimeoutMs);
    } else if (conn.draining && this.guard(conn, 'idle', () => session.idle()) === true) {
      socket.end();
    }
  }

  private onEnd(conn: Connection): void {
    const { session } = conn;
    if (conn.socket.destroyed || session === null || conn.closing) return;
    this.stopRequestTimer(conn);
    if (session.decodeEnd !== undefined) {
      if (this.decodeAndAnswer(conn, session, null) === FAILED || conn.closing) return;
    }
    // Flushes the answers, then FIN; the socket closes as the peer has already ended its side.
    conn.end();
  }

  private onIdle(conn: Connection): void {
    if (conn.socket.destroyed) return;
    const session = conn.session;
    if (session?.onIdleTimeout !== undefined && !conn.closing) {
      this.guard(conn, 'onIdleTimeout', () => session.onIdleTimeout?.());
      return;
    }
    this.log.debug({ conn: conn.id, remote: conn.remote }, `${this.options.frontend} connection idle, closing`);
    conn.socket.destroy();
  }

  private onRequestTimeout(conn: Connection): void {
    conn.requestTimer = null;
    // Closed meanwhile (idle timeout, error): its 'close' has not cleared this timer yet.
    if (conn.socket.destroyed) return;
    const pendingBytes = conn.session === null ? 0 : this.guard(conn, 'pendingBytes', () => conn.session!.pendingBytes());
    if (pendingBytes === FAILED) return;
    this.fail(conn, 'request_timeout', 'warn', { pendingBytes });
  }

  private onClose(conn: Connection): void {
    this.connections.delete(conn);
    this.active.dec();
    this.stopRequestTimer(conn);
    this.log.debug({ conn: conn.id, remote: conn.remote }, `${this.options.frontend} connection closed`);
    if (this.connections.size === 0) this.onLastConnectionGone?.();
  }

  private stopRequestTimer(conn: Connection): void {
    if (conn.requestTimer !== null) {
      clearTimeout(conn.requestTimer);
      conn.requestTimer = null;
    }
  }

  /** One log line, one count, then close: what was written is flushed first, nothing more is read. */
  private fail(conn: Connection, kind: string, level: 'warn' | 'info', fields: Readonly<Record<string, unknown>>): void {
    const { socket } = conn;
    // Already closing (another timer, error or fault): one close, one count.
    if (socket.destroyed || conn.closing) return;
    conn.closing = true;
    const { frontend, metrics } = this.options;
    // Structured fields only: the offending bytes are never logged.
    this.log[level]({ conn: conn.id, remote: conn.remote, kind, ...fields }, `${frontend} protocol error, connection closed`);
    metrics.protocolErrors.inc({ frontend, kind });
    this.stopRequestTimer(conn);
    if (socket.writableFinished) {
      socket.destroy();
      return;
    }
    // Data the peer sends meanwhile destroys the connection (onData); a peer that never reads meets the idle timeout.
    socket.once('finish', () => socket.destroy());
    socket.end();
  }

  /** Is this connection's session idle (nothing lost by ending it now)? A throw closes it (false). */
  private isIdle(conn: Connection): boolean {
    const session = conn.session;
    return session !== null && this.guard(conn, 'idle', () => session.idle()) === true;
  }

  /** Ends idle connections now, the others once idle; destroys what is left after deadlineMs. Resolves when none is left. */
  async drain(deadlineMs: number): Promise<void> {
    this.draining = true;
    // Our own bookkeeping (gauge, timers) runs in each socket's 'close': wait for it.
    const gone = new Promise<void>((resolve) => {
      this.onLastConnectionGone = resolve;
      if (this.connections.size === 0) resolve();
    });
    for (const conn of this.connections) {
      conn.draining = true;
      // Idle: FIN now (the MTA reconnects for its next question). Busy: onData ends it once idle.
      // Fresh (accepted, nothing read yet): its question is on the way; answered, then ended like a busy one.
      if (!conn.fresh && !conn.socket.writableEnded && this.isIdle(conn)) conn.socket.end();
    }
    // A fresh connection whose question has not come within FRESH_QUESTION_WAIT_MS is merely idle:
    // an MTA writes its question as soon as it connects, an idle client would hold the drain to the deadline.
    const freshWait = setTimeout(
      () => {
        for (const conn of this.connections) {
          if (conn.fresh && !conn.socket.writableEnded && this.isIdle(conn)) conn.socket.end();
        }
      },
      Math.min(FRESH_QUESTION_WAIT_MS, deadlineMs),
    );
    const deadline = setTimeout(() => {
      if (this.connections.size > 0)
        this.log.warn(
          { connections: this.connections.size },
          `${this.options.frontend} drain deadline reached, destroying connections`,
        );
      for (const conn of this.connections) conn.socket.destroy();
    }, deadlineMs);
    try {
      await gone;
    } finally {
      clearTimeout(freshWait);
      clearTimeout(deadline);
    }
  }
}
