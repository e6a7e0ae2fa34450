/**
 * Milter listener: the shared stream skeleton (net/stream-server.ts) around the codec and the pure
 * session (session.ts). Bytes are parsed by codec.ts only; the one decision is taken at MAIL FROM by
 * `onMailFrom`, synchronously, so replies leave in command order by construction.
 */
import type { Logger } from 'pino';
import type { ListenerHandle, ListenerOptions, StreamConnection, StreamSession } from '../../net/stream-server.js';
import { startProtocol, type FrontendProtocol } from '../spec.js';
import { MILTER_CODEC_ERROR_KINDS, MilterCodecError, MilterDecoder, encodeReplyCode, type MilterCommand } from './codec.js';
import {
  MILTER_SESSION_ERROR_KINDS,
  CONTINUE_REPLY,
  INTERNAL_ERROR_REPLY,
  MilterSession,
  type MilterTransaction,
  type MilterVerdict,
} from './session.js';

export type { MilterTransaction, MilterVerdict } from './session.js';

/**
 * Called once per MAIL FROM. Synchronous. If it throws (or returns a reply the codec cannot
 * encode): logged, answered `451 4.3.0` internal_error.
 */
export type MailFromHandler = (transaction: MilterTransaction) => MilterVerdict;

export interface MilterServerOptions extends ListenerOptions {
  /** Largest packet accepted (length field; --max-milter-packet-bytes). */
  readonly maxPacketBytes: number;
  /**
   * Close a connection silent this long (--milter-idle-timeout). Postfix waits milter_command_timeout
   * (30 s) for each reply and milter_content_timeout (300 s) during content, but sends nothing between
   * MAIL FROM and the end of a message while the SMTP client sends RCPTs and the body (we negotiate
   * those events away): a transaction idle towards us for longer than this is cut, and Postfix applies
   * milter_default_action (tempfail) to it. Hence an hour by default, not the policy side's 330 s.
   */
  readonly idleTimeoutMs: number;
  /**
   * Longest time from the first byte of a packet to its last (--request-timeout): bytes dribbled one
   * at a time keep a socket from ever being idle. An MTA writes each packet whole.
   */
  readonly packetTimeoutMs: number;
  readonly onMailFrom: MailFromHandler;
}

/**
 * Every protocol-error kind of the Milter frontend besides the skeleton's (STREAM_ERROR_KINDS): the
 * codec's, the session's, a silent connection cut (`idle_timeout`) and macros for a stage not kept
 * (`macro_stage_ignored`, counted without closing).
 */
export const MILTER_PROTOCOL_ERROR_KINDS = Object.freeze([
  ...MILTER_CODEC_ERROR_KINDS,
  ...MILTER_SESSION_ERROR_KINDS,
  'idle_timeout',
  'macro_stage_ignored',
] as const);
export type MilterProtocolErrorKind = (typeof MILTER_PROTOCOL_ERROR_KINDS)[number];

/** The Milter listener with a handler of its own (tests, bench); the daemon starts MILTER_FRONTEND (frontend.ts). */
export function startMilterServer(listenAddress: string, options: MilterServerOptions): Promise<ListenerHandle> {
  const protocol = milterProtocol(options.maxPacketBytes, options.maxConnectionBytes, options.onMailFrom, options.logger);
  const values = { ...options, requestTimeoutMs: options.packetTimeoutMs };
  return startProtocol('milter', MILTER_PROTOCOL_ERROR_KINDS, protocol, listenAddress, values, options, options);
}

/** The Milter protocol on the skeleton: keep-alive, the codec's faults, a session per connection. Checks the limit now. */
export function milterProtocol(
  maxPacketBytes: number,
  maxConnectionBytes: number,
  onMailFrom: MailFromHandler,
  logger: Logger,
): FrontendProtocol<MilterProtocolErrorKind, MilterCommand> {
  new MilterDecoder({ maxPacketBytes }); // validates the limit now rather than at the first connection
  if (maxPacketBytes + 4 > maxConnectionBytes) {
    throw new RangeError(
      `maxConnectionBytes (${maxConnectionBytes}) must hold at least one packet of maxPacketBytes (${maxPacketBytes}) plus its 4-byte header`,
    );
  }
  return {
    keepAliveMs: 60_000,
    codecFault: (err) =>
      err instanceof MilterCodecError ? { kind: err.kind, completed: err.completed, fields: { command: err.command } } : null,
    createSession: (conn) => milterSession(conn, maxPacketBytes, onMailFrom, logger),
  };
}

function milterSession(
  conn: StreamConnection<MilterProtocolErrorKind>,
  maxPacketBytes: number,
  onMailFrom: MailFromHandler,
  logger: Logger,
): StreamSession<MilterCommand> {
  const decoder = new MilterDecoder({ maxPacketBytes });
  const session = new MilterSession(conn.id);

  function decide(transaction: MilterTransaction): Buffer {
    try {
      const verdict = onMailFrom(transaction);
      return verdict.action === 'continue' ? CONTINUE_REPLY : encodeReplyCode(verdict.smtpCode, verdict.text);
    } catch (err) {
      logger.error(
        { frontend: 'milter', conn: conn.id, remote: conn.remote, err },
        'milter MAIL FROM handler failed, answering internal_error',
      );
      return INTERNAL_ERROR_REPLY;
    }
  }

  /** One write for every reply of a chunk. */
  function flush(replies: Buffer[]): void {
    if (replies.length > 0) conn.write(replies.length === 1 ? replies[0]! : Buffer.concat(replies));
  }

  return {
    decode: (chunk) => decoder.push(chunk),
    answer(commands) {
      const replies: Buffer[] = [];
      for (const command of commands) {
        const step = session.apply(command, conn.draining);
        if (step === null) continue;
        if (step.type === 'reply') replies.push(step.bytes);
        else if (step.type === 'mail') replies.push(decide(step.transaction));
        else if (step.type === 'ignored') conn.count(step.kind);
        else {
          // A session error or QUIT: the replies before it leave first.
          flush(replies);
          if (step.type === 'error') conn.fail(step.kind, 'warn', step.fields);
          else conn.end();
          return;
        }
      }
      flush(replies);
    },
    pendingBytes: () => decoder.bufferedBytes,
    heldBytes: () => decoder.heldBytes + session.retainedBytes,
    idle: () => session.betweenSessions,
    onIdleTimeout: () => conn.fail('idle_timeout', 'info'),
  };
}
