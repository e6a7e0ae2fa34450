/**
 * Postfix policy listener: the shared stream skeleton (net/stream-server.ts) around the codec,
 * nothing else. Bytes are parsed by codec.ts only; the answer comes from `handle`, synchronously, so replies leave in request
 * order by construction.
 *
 * Exim's `${readsocket}` writes its request, shuts down its side and reads to EOF: sockets are
 * half-open capable, and at EOF the pending request (with or without its empty line) is answered
 * before the socket is ended.
 */
import type { Logger } from 'pino';
import { POLICY_ACTIONS } from '../../trust/reasons.js';
import { startStreamServer, type ListenerOptions, type StreamConnection, type StreamSession } from '../../net/stream-server.js';
import {
  POLICY_CODEC_ERROR_KINDS,
  PolicyCodecError,
  PolicyDecoder,
  encodeReply,
  type PolicyCodecErrorKind,
  type PolicyLimits,
  type PolicyRequest,
} from './codec.js';

export interface ConnectionInfo {
  readonly id: number;
  /** `ip:port` of the peer, or `unix` for a unix socket. */
  readonly remote: string;
}

export interface PolicyServerOptions extends ListenerOptions {
  /** --max-line-bytes, --max-request-bytes, --max-attributes. */
  readonly limits: PolicyLimits;
  /**
   * Close a connection silent this long (--idle-timeout). Derived from Postfix's own client settings,
   * plus a grace, so that Postfix is the one that closes first: smtpd_policy_service_max_idle = 300 s.
   */
  readonly idleTimeoutMs: number;
  /** Longest time from the first byte of a request to its end (--request-timeout; smtpd_policy_service_timeout = 100 s). */
  readonly requestTimeoutMs: number;
  /** The action for one request (`DUNNO`, `550 5.7.1 ...`). If it throws: logged, answered with the internal_error action. */
  readonly handle: (request: PolicyRequest, connection: ConnectionInfo) => string;
}

export interface PolicyServer {
  /** `host:port` actually bound (the real port when 0 was asked), or `unix:/path`. */
  readonly address: string;
  /**
   * Stops accepting, ends idle connections, lets requests being received finish and be answered,
   * destroys what is left after `deadlineMs` milliseconds, removes the unix socket file.
   */
  close(deadlineMs: number): Promise<void>;
}

export async function startPolicyServer(listenAddress: string, options: PolicyServerOptions): Promise<PolicyServer> {
  const { limits, maxConnectionBytes } = options;
  new PolicyDecoder(limits); // validates the limits now rather than at the first connection
  if (limits.maxRequestBytes + limits.maxLineBytes > maxConnectionBytes) {
    throw new RangeError(
      `maxConnectionBytes (${maxConnectionBytes}) must hold one request (maxRequestBytes + maxLineBytes = ${limits.maxRequestBytes + limits.maxLineBytes})`,
    );
  }
  const { logger, handle } = options;
  return startStreamServer(listenAddress, {
    frontend: 'policy',
    protocolErrorKinds: POLICY_CODEC_ERROR_KINDS,
    limits: {
      maxConnections: options.maxConnections,
      idleTimeoutMs: options.idleTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs,
      maxConnectionBytes,
      heapWatermarkPercent: options.heapWatermarkPercent,
    },
    logger,
    metrics: options.metrics,
    allowHalfOpen: true,
    unixSocket: options.unixSocket,
    allowedPeerUsers: options.allowedPeerUsers,
    createSession: (conn) => policySession(conn, limits, handle, logger),
  });
}

const FAILED = Symbol('codec error');

function policySession(
  conn: StreamConnection<PolicyCodecErrorKind>,
  limits: PolicyLimits,
  handle: PolicyServerOptions['handle'],
  logger: Logger,
): StreamSession {
  const decoder = new PolicyDecoder(limits);
  const info: ConnectionInfo = Object.freeze({ id: conn.id, remote: conn.remote });

  function decide(request: PolicyRequest): string {
    try {
      return handle(request, info);
    } catch (err) {
      logger.error(
        { frontend: 'policy', conn: conn.id, remote: conn.remote, err },
        'policy handler failed, answering internal_error',
      );
      return POLICY_ACTIONS.internal_error;
    }
  }

  /** One write for every reply of a chunk. encodeReply's Buffers are shared: written, never modified. */
  function answer(requests: PolicyRequest[]): void {
    if (requests.length === 1) conn.write(encodeReply(decide(requests[0]!)));
    else conn.write(Buffer.concat(requests.map((request) => encodeReply(decide(request)))));
  }

  /** A codec error closes the connection as a protocol error; anything else is the skeleton's to log. */
  function decode<T>(step: () => T): T | typeof FAILED {
    try {
      return step();
    } catch (err) {
      if (!(err instanceof PolicyCodecError)) throw err;
      conn.fail(err.kind, 'warn');
      return FAILED;
    }
  }

  return {
    onData(chunk) {
      const requests = decode(() => decoder.push(chunk));
      if (requests === FAILED || requests.length === 0) return false;
      answer(requests);
      return true;
    },
    onEnd() {
      const request = decode(() => decoder.end());
      if (request === FAILED) return;
      if (request !== null) answer([request]);
      // Flushes the reply, then FIN; the socket closes as the peer has already ended its side.
      conn.end();
    },
    pendingBytes: () => decoder.pendingBytes,
    heldBytes: () => decoder.pendingBytes,
    idle: () => decoder.pendingBytes === 0,
  };
}
