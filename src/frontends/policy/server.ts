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
import type { ListenerHandle, ListenerOptions, StreamConnection, StreamSession } from '../../net/stream-server.js';
import { startProtocol, type FrontendProtocol } from '../spec.js';
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

/** The action for one request (`DUNNO`, `550 5.7.1 ...`). If it throws: logged, answered with the internal_error action. */
export type PolicyHandler = (request: PolicyRequest, connection: ConnectionInfo) => string;

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
  readonly handle: PolicyHandler;
}

/** The policy listener with a handler of its own (tests, bench); the daemon starts POLICY_FRONTEND (frontend.ts). */
export function startPolicyServer(listenAddress: string, options: PolicyServerOptions): Promise<ListenerHandle> {
  const protocol = policyProtocol(options.limits, options.maxConnectionBytes, options.handle, options.logger);
  return startProtocol('policy', POLICY_CODEC_ERROR_KINDS, protocol, listenAddress, options, options, options);
}

/**
 * The policy protocol on the skeleton: half-open (Exim's readsocket), the codec's faults, a session
 * per connection. Checks the limits now rather than at the first connection.
 */
export function policyProtocol(
  limits: PolicyLimits,
  maxConnectionBytes: number,
  handle: PolicyHandler,
  logger: Logger,
): FrontendProtocol<PolicyCodecErrorKind, PolicyRequest> {
  new PolicyDecoder(limits); // validates the limits now rather than at the first connection
  if (limits.maxRequestBytes + limits.maxLineBytes > maxConnectionBytes) {
    throw new RangeError(
      `maxConnectionBytes (${maxConnectionBytes}) must hold one request (maxRequestBytes + maxLineBytes = ${limits.maxRequestBytes + limits.maxLineBytes})`,
    );
  }
  return {
    allowHalfOpen: true,
    codecFault: (err) => (err instanceof PolicyCodecError ? err : null),
    createSession: (conn) => policySession(conn, limits, handle, logger),
  };
}

function policySession(
  conn: StreamConnection<PolicyCodecErrorKind>,
  limits: PolicyLimits,
  handle: PolicyHandler,
  logger: Logger,
): StreamSession<PolicyRequest> {
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

  return {
    decode: (chunk) => decoder.push(chunk),
    decodeEnd() {
      const request = decoder.end();
      return request === null ? [] : [request];
    },
    /** One write for every reply of a chunk. encodeReply's Buffers are shared: written, never modified. */
    answer(requests) {
      if (requests.length === 1) conn.write(encodeReply(decide(requests[0]!)));
      else conn.write(Buffer.concat(requests.map((request) => encodeReply(decide(request)))));
    },
    pendingBytes: () => decoder.pendingBytes,
    heldBytes: () => decoder.pendingBytes,
    idle: () => decoder.pendingBytes === 0,
  };
}
