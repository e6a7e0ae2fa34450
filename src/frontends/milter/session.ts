/**
 * One Milter connection's protocol state, without sockets: negotiation, which macros are kept and
 * for how long, and what each command asks of the server. `apply(command)` returns at most one step
 * (a reply, a decision to take at MAIL FROM, an end, a protocol error or an anomaly to count).
 *
 * Memory is bounded by construction: only the macros the decision and the trace read are kept
 * (REQUESTED_MACROS), only for the stages that carry them (CONNECT, HELO, MAIL); a MACRO packet
 * for another stage is dropped and reported (`macro_stage_ignored`). `retainedBytes` is what the
 * kept state costs, charged conservatively (two bytes a character plus a fixed cost per entry), for
 * the server's per-connection byte budget.
 *
 * Lifetimes: CONNECT and HELO macros live for the SMTP connection, MAIL macros for one message
 * (dropped at ABORT, at end of message, at a new HELO); a new MACRO packet for a stage replaces that
 * stage; OPTNEG and QUIT_NC start afresh.
 */
import { REASONS, replyText } from '../../trust/reasons.js';
import {
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
  { readonly action: 'continue' } | { readonly action: 'reply'; readonly smtpCode: string; readonly text: string };

/** Protocol error kinds of the session (the codec's come from MilterCodecError). */
export const MILTER_SESSION_ERROR_KINDS = Object.freeze(['unexpected_command', 'unsupported_version'] as const);
export type MilterSessionErrorKind = (typeof MILTER_SESSION_ERROR_KINDS)[number];

export type MilterStep =
  /** Write these bytes, in command order. */
  | { readonly type: 'reply'; readonly bytes: Buffer }
  /** MAIL FROM: decide now and write the verdict in this position. */
  | { readonly type: 'mail'; readonly transaction: MilterTransaction }
  /** Flush the replies so far, then end the connection; read nothing more. */
  | { readonly type: 'end' }
  /** Close the connection as a protocol error. */
  | { readonly type: 'error'; readonly kind: MilterSessionErrorKind; readonly fields: Readonly<Record<string, unknown>> }
  /** Count an anomaly and go on. */
  | { readonly type: 'ignored'; readonly kind: 'macro_stage_ignored'; readonly stage: string };

/**
 * Macros asked for with SETSYMLIST. TLS ones are asked at MAIL too: a client may skip EHLO after STARTTLS.
 * `{cert_fp}` / `{cert_md5}`: Sendmail's certificate fingerprint (recorded, never decided on); Postfix has none.
 */
export const REQUESTED_MACROS: readonly MilterSymList[] = Object.freeze([
  {
    stage: SMFIM.HELO,
    names: [
      '{tls_version}',
      '{cipher}',
      '{cipher_bits}',
      '{cert_subject}',
      '{cert_issuer}',
      '{verify}',
      '{cert_fp}',
      '{cert_md5}',
    ],
  },
  {
    stage: SMFIM.ENVFROM,
    names: [
      '{mail_addr}',
      'i',
      '{auth_authen}',
      '{tls_version}',
      '{cipher}',
      '{cipher_bits}',
      '{cert_subject}',
      '{cert_issuer}',
      '{verify}',
      '{cert_fp}',
      '{cert_md5}',
    ],
  },
]);

/** The only macro names kept: those we ask for (the decision and the trace read nothing else). */
export const KEPT_MACROS: ReadonlySet<string> = new Set(REQUESTED_MACROS.flatMap((list) => list.names));
/** Stages whose macros are kept: what the decision at MAIL FROM can see. */
const KEPT_STAGES: readonly string[] = Object.freeze(['C', 'H', 'M']);
/** Stages whose macros live for the connection; MAIL's live for one message. */
const CONNECTION_STAGES = new Set(['C', 'H']);
/** Charged per kept macro on top of its characters: a Map entry and two string headers. */
export const MACRO_ENTRY_COST = 64;

/** Events we never need: the MTA is asked not to send them (where it can skip them). */
const UNWANTED_EVENTS = SMFIP.NORCPT | SMFIP.NOBODY | SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NODATA | SMFIP.NOUNKNOWN;
/** Events we receive but never answer (only CONTINUE would be said). */
const NO_REPLY_EVENTS = SMFIP.NR_CONN | SMFIP.NR_HELO;

const MIN_PROTOCOL_VERSION = 2;
const MAX_PROTOCOL_VERSION = 6;

/**
 * Our OPTNEG answer to what the MTA offers, or null when its version is below 2. Only flags the MTA
 * offered are set (libmilter refuses others); macro lists are requested when version 6 and
 * SMFIF_SETSYMLIST are both available.
 */
export function negotiate(offer: {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
}): Required<OptnegReply> | null {
  if (offer.version < MIN_PROTOCOL_VERSION) return null;
  const version = Math.min(offer.version, MAX_PROTOCOL_VERSION);
  const protocol = (UNWANTED_EVENTS | NO_REPLY_EVENTS) & offer.protocol;
  const symlist = version >= 6 && (offer.actions & SMFIF.SETSYMLIST) !== 0;
  return { version, actions: symlist ? SMFIF.SETSYMLIST : 0, protocol, symlists: symlist ? REQUESTED_MACROS : [] };
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

export const CONTINUE_REPLY = encodeContinue();
/** What a MAIL FROM verdict becomes when the handler failed. */
export const INTERNAL_ERROR_REPLY = encodeReplyCode(REASONS.internal_error.smtpCode, replyText(REASONS.internal_error));
const CONTINUE: MilterStep = Object.freeze({ type: 'reply', bytes: CONTINUE_REPLY });
const END: MilterStep = Object.freeze({ type: 'end' });

/** Reply bit of each event that only CONTINUE would answer. */
const REPLY_FLAG: Partial<Record<MilterCommand['type'], number>> = {
  rcpt: SMFIP.NR_RCPT,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
  data: SMFIP.NR_DATA,
  unknown: SMFIP.NR_UNKN,
};

interface Stage {
  readonly macros: ReadonlyMap<string, string>;
  readonly bytes: number;
}

function costOf(text: string | null): number {
  return text === null ? 0 : 2 * text.length;
}

export class MilterSession {
  readonly connectionId: number;
  /** Negotiated protocol flags; null before OPTNEG. */
  protocol: number | null = null;
  /** After QUIT_NC: no SMTP session is using the connection. */
  betweenSessions = false;
  private readonly stages = new Map<string, Stage>();
  private clientAddress: string | null = null;
  private clientName: string | null = null;
  private helo: string | null = null;

  constructor(connectionId: number) {
    this.connectionId = connectionId;
  }

  /** What the kept state costs, in bytes (see the file comment). */
  get retainedBytes(): number {
    let bytes = costOf(this.clientAddress) + costOf(this.clientName) + costOf(this.helo);
    for (const stage of this.stages.values()) bytes += stage.bytes;
    return bytes;
  }

  /** Applies one command. `draining`: the server is closing; a QUIT_NC then ends the connection. */
  apply(command: MilterCommand, draining = false): MilterStep | null {
    if (command.type === 'quit') return END;
    if (command.type === 'optneg') {
      const answer = negotiate(command);
      if (answer === null)
        return { type: 'error', kind: 'unsupported_version', fields: { command: 'O', version: command.version } };
      this.reset();
      this.protocol = answer.protocol;
      return { type: 'reply', bytes: encodeOptnegReply(answer) };
    }
    const protocol = this.protocol;
    if (protocol === null) return { type: 'error', kind: 'unexpected_command', fields: { command: null, type: command.type } };
    switch (command.type) {
      case 'macro':
        return this.keepMacros(command.stage, command.macros);
      case 'connect':
        // CONNECT's macros have just been sent: keep them, drop the rest.
        for (const stage of this.stages.keys()) if (stage !== 'C') this.stages.delete(stage);
        this.betweenSessions = false;
        this.clientName = command.hostname === '' ? null : command.hostname;
        this.clientAddress = command.address === null || command.address === '' ? null : command.address;
        this.helo = null;
        return (protocol & SMFIP.NR_CONN) === 0 ? CONTINUE : null;
      case 'helo':
        // A new EHLO (e.g. after STARTTLS) starts over: any message state is stale.
        this.clearMessage();
        this.helo = command.name;
        return (protocol & SMFIP.NR_HELO) === 0 ? CONTINUE : null;
      case 'mail':
        return { type: 'mail', transaction: this.transaction(command.args) };
      case 'abort':
        this.clearMessage();
        return null;
      case 'bodyeob':
        this.clearMessage();
        return CONTINUE;
      case 'quit_nc':
        this.reset();
        this.betweenSessions = true;
        return draining ? END : null;
      default:
        return (protocol & (REPLY_FLAG[command.type] ?? 0)) === 0 ? CONTINUE : null;
    }
  }

  private keepMacros(stage: string, macros: ReadonlyArray<readonly [string, string]>): MilterStep | null {
    if (!KEPT_STAGES.includes(stage)) return { type: 'ignored', kind: 'macro_stage_ignored', stage };
    const kept = new Map<string, string>();
    let bytes = 0;
    for (const [raw, value] of macros) {
      const name = canonicalMacroName(raw);
      if (!KEPT_MACROS.has(name)) continue;
      const previous = kept.get(name);
      if (previous !== undefined) bytes -= 2 * (name.length + previous.length) + MACRO_ENTRY_COST;
      kept.set(name, value);
      bytes += 2 * (name.length + value.length) + MACRO_ENTRY_COST;
    }
    this.stages.set(stage, { macros: kept, bytes });
    return null;
  }

  private transaction(args: readonly string[]): MilterTransaction {
    const macros = new Map<string, string>();
    for (const stage of KEPT_STAGES) {
      const values = this.stages.get(stage);
      if (values !== undefined) for (const [name, value] of values.macros) macros.set(name, value);
    }
    return {
      macros,
      clientAddress: this.clientAddress,
      clientName: this.clientName,
      helo: this.helo,
      sender: senderAddress(args[0] ?? ''),
      connectionId: this.connectionId,
    };
  }

  private clearMessage(): void {
    for (const stage of this.stages.keys()) if (!CONNECTION_STAGES.has(stage)) this.stages.delete(stage);
  }

  private reset(): void {
    this.stages.clear();
    this.clientAddress = null;
    this.clientName = null;
    this.helo = null;
  }
}
