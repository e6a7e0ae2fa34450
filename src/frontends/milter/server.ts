/**
 * Milter listener: negotiation, per-connection macro state, limits and timeouts around the codec.
 * Bytes are parsed by codec.ts only; the one decision is taken at MAIL FROM by `onMailFrom`,
 * synchronously, so replies leave in command order by construction.
 *
 * Macros are kept per stage as the MTA sends them (a new MACRO packet for a stage replaces that
 * stage): CONNECT and HELO macros live for the SMTP connection, later stages for one message and
 * are dropped at ABORT, at end of message, at a new HELO and at a new connection.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import type { Metrics } from '../../observe/metrics.js';
import { REASONS, replyText } from '../../trust/reasons.js';
import { createAdmission } from '../../net/admission.js';
import { formatAddress, listen, parseListenAddress, type ListenOptions } from '../../net/listen.js';
import {
  DEFAULT_MAX_PACKET_BYTES,
  MilterCodecError,
  MilterDecoder,
  SMFIF,
  SMFIM,
  SMFIP,
  encodeContinue,
  encodeOptnegReply,
  encodeReplyCode,
  type MilterCommand,
  type MilterSymList,
  type OptnegReply,
} from './codec.js';

export interface MilterTransaction {
  /** CONNECT, HELO then MAIL macros merged (a later stage wins); names of more than one character in braces. */
  readonly macros: ReadonlyMap<string, string>;
  readonly clientAddress: string | null;
  readonly clientName: string | null;
  readonly helo: string | null;
  /** MAIL FROM address without `<>`; '' for the null sender. */
  readonly sender: string;
  readonly connectionId: number;
}

export type MilterVerdict =
  | { readonly action: 'continue' }
  | { readonly action: 'reply'; readonly smtpCode: string; readonly text: string };

export interface MilterServerOptions {
  /** Largest packet accepted (length field). Default DEFAULT_MAX_PACKET_BYTES. */
  readonly maxPacketBytes?: number;
  /** Close a connection silent this long. Default 330 s: see MILTER_SERVER_DEFAULTS. */
  readonly idleTimeoutMs?: number;
  /**
   * Longest time from the first byte of a packet to its last: bytes dribbled one at a time keep a
   * socket from ever being idle. Default: the idle timeout, at most MILTER_SERVER_DEFAULTS.packetTimeoutMs.
   */
  readonly packetTimeoutMs?: number;
  /** Connections beyond this are accepted then closed at once, and counted. Default 1000. */
  readonly maxConnections?: number;
  /** Mode, owner and group of a unix socket file (default 0660, the daemon's user and group). */
  readonly unixSocket?: ListenOptions;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /**
   * Called once per MAIL FROM. Synchronous. If it throws (or returns a reply the codec cannot
   * encode): logged, answered `451 4.3.0` internal_error.
   */
  readonly onMailFrom: (transaction: MilterTransaction) => MilterVerdict;
}

/**
 * Postfix waits milter_command_timeout (30 s) for each reply and milter_content_timeout (300 s)
 * during content; 330 s outlasts both, so Postfix is the side that gives up first. Caveat: Postfix
 * sends nothing between MAIL and end-of-message while the SMTP client sends RCPTs and the body
 * (we negotiate those events away); a transaction idle towards us for longer than this is cut,
 * and Postfix applies milter_default_action to it.
 */
export const MILTER_SERVER_DEFAULTS = Object.freeze({
  maxPacketBytes: DEFAULT_MAX_PACKET_BYTES,
  idleTimeoutMs: 330_000,
  /** An MTA writes each packet whole; 110 s like the policy request timeout (Postfix waits 100 s there). */
  packetTimeoutMs: 110_000,
  maxConnections: 1000,
});

/** Macros asked for with SETSYMLIST. TLS ones are asked at MAIL too: a client may skip EHLO after STARTTLS. */
export const REQUESTED_MACROS: readonly MilterSymList[] = Object.freeze([
  { stage: SMFIM.HELO, names: ['{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}', '{verify}'] },
  {
    stage: SMFIM.ENVFROM,
    names: ['{mail_addr}', 'i', '{auth_authen}', '{tls_version}', '{cipher}', '{cipher_bits}', '{cert_subject}', '{cert_issuer}', '{verify}'],
  },
]);

/** Events we never need: the MTA is asked not to send them (where it can skip them). */
const UNWANTED_EVENTS = SMFIP.NORCPT | SMFIP.NOBODY | SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NODATA | SMFIP.NOUNKNOWN;
/** Events we receive but never answer (only CONTINUE would be said). */
const NO_REPLY_EVENTS = SMFIP.NR_CONN | SMFIP.NR_HELO;

export const MIN_PROTOCOL_VERSION = 2;
export const MAX_PROTOCOL_VERSION = 6;

/**
 * Our OPTNEG answer to what the MTA offers, or null when its version is below 2. Only flags the MTA
 * offered are set (libmilter refuses others); macro lists are requested when version 6 and
 * SMFIF_SETSYMLIST are both available.
 */
export function negotiate(offer: { readonly version: number; readonly actions: number; readonly protocol: number }): Required<OptnegReply> | null {
  if (offer.version < MIN_PROTOCOL_VERSION) return null;
  const version = Math.min(offer.version, MAX_PROTOCOL_VERSION);
  const protocol = (UNWANTED_EVENTS | NO_REPLY_EVENTS) & offer.protocol;
  const symlist = version >= 6 && (offer.actions & SMFIF.SETSYMLIST) !== 0;
  return { version, actions: symlist ? SMFIF.SETSYMLIST : 0, protocol, symlists: symlist ? REQUESTED_MACROS : [] };
}

export interface MilterServer {
  /** `host:port` actually bound (the real port when 0 was asked), or `unix:/path`. */
  readonly address: string;
  /**
   * Stops accepting and lets open connections finish (a Milter connection lasts one SMTP session;
   * the MTA closes it), ends those idle after a QUIT_NC, destroys what is left after `deadlineMs`,
   * removes the unix socket file.
   */
  close(deadlineMs: number): Promise<void>;
}

/** Protocol error kinds of the server itself (the codec's come from MilterCodecError). */
export type MilterServerErrorKind = 'unexpected_command' | 'unsupported_version' | 'idle_timeout' | 'request_timeout';

/** Stages whose macros live for the connection; every other stage's live for one message. */
const CONNECTION_STAGES = new Set(['C', 'H']);

interface Connection {
  readonly id: number;
  readonly remote: string;
  readonly socket: net.Socket;
  readonly decoder: MilterDecoder;
  /** Negotiated protocol flags; null before OPTNEG. */
  protocol: number | null;
  /** Macros by stage character (C, H, M, ...). */
  readonly macros: Map<string, Map<string, string>>;
  clientAddress: string | null;
  clientName: string | null;
  helo: string | null;
  /** After QUIT_NC: no SMTP session is using the connection. */
  betweenSessions: boolean;
  /** Running while a packet is partly received. */
  packetTimer: NodeJS.Timeout | null;
}

const CONTINUE = encodeContinue();
const INTERNAL_ERROR = encodeReplyCode(REASONS.internal_error.smtpCode, replyText(REASONS.internal_error));

export async function startMilterServer(listenAddress: string, options: MilterServerOptions): Promise<MilterServer> {
  const maxPacketBytes = options.maxPacketBytes ?? MILTER_SERVER_DEFAULTS.maxPacketBytes;
  const idleTimeoutMs = options.idleTimeoutMs ?? MILTER_SERVER_DEFAULTS.idleTimeoutMs;
  const packetTimeoutMs = options.packetTimeoutMs ?? Math.min(idleTimeoutMs, MILTER_SERVER_DEFAULTS.packetTimeoutMs);
  const maxConnections = options.maxConnections ?? MILTER_SERVER_DEFAULTS.maxConnections;
  const { logger, metrics, onMailFrom } = options;
  new MilterDecoder({ maxPacketBytes }); // validates the limit now rather than at the first connection

  const parsed = parseListenAddress(listenAddress);
  const log = logger.child({ frontend: 'milter' });
  const active = metrics.connectionsActive.labels({ frontend: 'milter' });
  const connections = new Set<Connection>();
  let nextId = 0;
  let closing: Promise<void> | null = null;
  let draining = false;
  /** Set by close(): resolves once the last connection has emitted 'close'. */
  let onDrained: (() => void) | null = null;

  const server = net.createServer();
  const admission = createAdmission('milter', maxConnections, parsed.kind === 'unix', metrics, log);
  server.on('connection', onConnection);
  // Accept errors (EMFILE...) must not kill the daemon.
  server.on('error', (err) => log.error({ err }, 'milter listener error'));

  const bound = await listen(server, parsed, options.unixSocket);
  const address = formatAddress(bound.address);
  log.info({ address }, 'milter listener ready');

  function onConnection(socket: net.Socket): void {
    if (!admission.admit(socket, connections.size)) return;
    const remote = admission.remoteOf(socket);
    const conn: Connection = {
      id: ++nextId,
      remote,
      socket,
      decoder: new MilterDecoder({ maxPacketBytes }),
      protocol: null,
      macros: new Map(),
      clientAddress: null,
      clientName: null,
      helo: null,
      betweenSessions: false,
      packetTimer: null,
    };
    connections.add(conn);
    active.inc();
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.setTimeout(idleTimeoutMs);
    socket.on('data', (chunk: Buffer) => onData(conn, chunk));
    socket.on('timeout', () => protocolError(conn, 'idle_timeout', 'info'));
    // An MTA that does not read our replies: stop reading until they are flushed.
    socket.on('drain', () => socket.resume());
    socket.on('error', (err: NodeJS.ErrnoException) => log.debug({ conn: conn.id, remote, code: err.code }, 'milter connection error'));
    socket.on('close', () => {
      connections.delete(conn);
      active.dec();
      if (conn.packetTimer !== null) clearTimeout(conn.packetTimer);
      log.debug({ conn: conn.id, remote }, 'milter connection closed');
      if (connections.size === 0) onDrained?.();
    });
    log.debug({ conn: conn.id, remote }, 'milter connection opened');
  }

  function onData(conn: Connection, chunk: Buffer): void {
    // After QUIT we have ended our side: nothing more is read or answered.
    if (conn.socket.destroyed || conn.socket.writableEnded) return;
    let commands: MilterCommand[];
    try {
      commands = conn.decoder.push(chunk);
    } catch (err) {
      if (err instanceof MilterCodecError) protocolError(conn, err.kind, 'warn', err.command);
      else {
        log.error({ conn: conn.id, remote: conn.remote, err }, 'milter connection failed, closed');
        conn.socket.destroy();
      }
      return;
    }
    const replies: Buffer[] = [];
    for (const command of commands) {
      if (!handle(conn, command, replies)) break;
    }
    if (conn.socket.destroyed || conn.socket.writableEnded) return;
    // The clock runs from the first byte of the packet still incomplete: restarted when a packet completes.
    if (conn.packetTimer !== null && (commands.length > 0 || conn.decoder.bufferedBytes === 0)) {
      clearTimeout(conn.packetTimer);
      conn.packetTimer = null;
    }
    if (conn.decoder.bufferedBytes > 0) {
      conn.packetTimer ??= setTimeout(() => protocolError(conn, 'request_timeout', 'warn', null, { bufferedBytes: conn.decoder.bufferedBytes }), packetTimeoutMs);
    }
    if (replies.length > 0) {
      // One write for every reply of a chunk.
      const flushed = conn.socket.write(replies.length === 1 ? replies[0]! : Buffer.concat(replies));
      if (!flushed) conn.socket.pause();
    }
  }

  /** Applies one command; pushes its reply if one is due. false: stop reading this connection. */
  function handle(conn: Connection, command: MilterCommand, replies: Buffer[]): boolean {
    if (command.type === 'quit') {
      flushAndEnd(conn, replies);
      return false;
    }
    if (command.type === 'optneg') {
      const answer = negotiate(command);
      if (answer === null) {
        protocolError(conn, 'unsupported_version', 'warn', 'O', { version: command.version });
        return false;
      }
      resetSession(conn);
      conn.protocol = answer.protocol;
      replies.push(encodeOptnegReply(answer));
      log.debug({ conn: conn.id, offered: command, answered: { ...answer, symlists: answer.symlists.length } }, 'milter negotiated');
      return true;
    }
    const protocol = conn.protocol;
    if (protocol === null) {
      protocolError(conn, 'unexpected_command', 'warn', null, { type: command.type });
      return false;
    }
    switch (command.type) {
      case 'macro': {
        const stage = new Map<string, string>();
        for (const [name, value] of command.macros) stage.set(canonicalMacroName(name), value);
        conn.macros.set(command.stage, stage);
        return true;
      }
      case 'connect':
        // CONNECT's macros have just been sent: keep them, drop the rest.
        for (const stage of conn.macros.keys()) if (stage !== 'C') conn.macros.delete(stage);
        conn.betweenSessions = false;
        conn.clientName = command.hostname === '' ? null : command.hostname;
        conn.clientAddress = command.address === null || command.address === '' ? null : command.address;
        conn.helo = null;
        if ((protocol & SMFIP.NR_CONN) === 0) replies.push(CONTINUE);
        return true;
      case 'helo':
        // A new EHLO (e.g. after STARTTLS) starts over: any message state is stale.
        clearMessage(conn);
        conn.helo = command.name;
        if ((protocol & SMFIP.NR_HELO) === 0) replies.push(CONTINUE);
        return true;
      case 'mail':
        replies.push(mailFrom(conn, command.args));
        return true;
      case 'abort':
        clearMessage(conn);
        return true;
      case 'bodyeob':
        clearMessage(conn);
        replies.push(CONTINUE);
        return true;
      case 'quit_nc':
        resetSession(conn);
        conn.betweenSessions = true;
        if (draining) {
          flushAndEnd(conn, replies);
          return false;
        }
        return true;
      case 'rcpt':
        if ((protocol & SMFIP.NR_RCPT) === 0) replies.push(CONTINUE);
        return true;
      case 'header':
        if ((protocol & SMFIP.NR_HDR) === 0) replies.push(CONTINUE);
        return true;
      case 'eoh':
        if ((protocol & SMFIP.NR_EOH) === 0) replies.push(CONTINUE);
        return true;
      case 'body':
        if ((protocol & SMFIP.NR_BODY) === 0) replies.push(CONTINUE);
        return true;
      case 'data':
        if ((protocol & SMFIP.NR_DATA) === 0) replies.push(CONTINUE);
        return true;
      case 'unknown':
        if ((protocol & SMFIP.NR_UNKN) === 0) replies.push(CONTINUE);
        return true;
    }
  }

  function mailFrom(conn: Connection, args: readonly string[]): Buffer {
    const macros = new Map<string, string>();
    for (const stage of ['C', 'H', 'M']) {
      const values = conn.macros.get(stage);
      if (values !== undefined) for (const [name, value] of values) macros.set(name, value);
    }
    const transaction: MilterTransaction = {
      macros,
      clientAddress: conn.clientAddress,
      clientName: conn.clientName,
      helo: conn.helo,
      sender: senderAddress(args[0] ?? ''),
      connectionId: conn.id,
    };
    try {
      const verdict = onMailFrom(transaction);
      return verdict.action === 'continue' ? CONTINUE : encodeReplyCode(verdict.smtpCode, verdict.text);
    } catch (err) {
      log.error({ conn: conn.id, remote: conn.remote, err }, 'milter MAIL FROM handler failed, answering internal_error');
      return INTERNAL_ERROR;
    }
  }

  function clearMessage(conn: Connection): void {
    for (const stage of conn.macros.keys()) if (!CONNECTION_STAGES.has(stage)) conn.macros.delete(stage);
  }

  function resetSession(conn: Connection): void {
    conn.macros.clear();
    conn.clientAddress = null;
    conn.clientName = null;
    conn.helo = null;
  }

  function flushAndEnd(conn: Connection, replies: Buffer[]): void {
    if (conn.socket.writableEnded) return;
    if (replies.length > 0) conn.socket.write(Buffer.concat(replies));
    replies.length = 0;
    conn.socket.end();
  }

  function protocolError(
    conn: Connection,
    kind: MilterCodecError['kind'] | MilterServerErrorKind,
    level: 'warn' | 'info',
    command: string | null = null,
    extra: Record<string, unknown> = {},
  ): void {
    // Already closed by another timer or error: one close, one count.
    if (conn.socket.destroyed) return;
    // Structured fields only: the offending bytes are never logged.
    log[level]({ conn: conn.id, remote: conn.remote, kind, command, ...extra }, 'milter protocol error, connection closed');
    metrics.protocolErrors.inc({ frontend: 'milter', kind });
    conn.socket.destroy();
  }

  function close(deadlineMs: number): Promise<void> {
    closing ??= (async () => {
      draining = true;
      // server.close() reports before the sockets' own 'close' events: wait for both.
      const closed = Promise.all([
        new Promise<void>((resolve) => server.close(() => resolve())),
        new Promise<void>((resolve) => {
          if (connections.size === 0) resolve();
          else onDrained = resolve;
        }),
      ]);
      for (const conn of connections) {
        if (conn.betweenSessions && !conn.socket.writableEnded) conn.socket.end();
      }
      const deadline = setTimeout(() => {
        if (connections.size > 0) log.warn({ connections: connections.size }, 'milter drain deadline reached, destroying connections');
        for (const conn of connections) conn.socket.destroy();
      }, deadlineMs);
      try {
        await closed;
      } finally {
        clearTimeout(deadline);
        await bound.release();
      }
      log.info({ address }, 'milter listener closed');
    })();
    return closing;
  }

  return { address, close };
}

/** `{name}` for names longer than one character: MTAs differ on whether they send the braces. */
export function canonicalMacroName(name: string): string {
  if (name.length <= 1 || (name.startsWith('{') && name.endsWith('}'))) return name;
  return `{${name}}`;
}

/** `<a@b>` → `a@b`, `<>` → '', source route `<@x,@y:a@b>` → `a@b`; a bare address is kept as sent. */
export function senderAddress(arg: string): string {
  let s = arg.trim();
  if (s.startsWith('<') && s.endsWith('>')) s = s.slice(1, -1).trim();
  if (s.startsWith('@')) {
    const colon = s.indexOf(':');
    if (colon !== -1) s = s.slice(colon + 1);
  }
  return s;
}

