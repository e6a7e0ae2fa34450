/**
 * Sendmail Milter protocol: bytes ⇄ commands and replies. Pure and incremental; no sockets.
 *
 * Wire format (both directions): a 4-byte big-endian length that counts the command byte and the
 * data, the command byte, then the data. Strings are NUL-terminated; numbers are 32-bit big-endian
 * (the CONNECT port is 16-bit). Learnt from libmilter's mfdef.h/engine.c and Postfix's milter8.c.
 */

/** Commands from the MTA (SMFIC_*). */
export const SMFIC = Object.freeze({
  ABORT: 0x41, // 'A'
  BODY: 0x42, // 'B'
  CONNECT: 0x43, // 'C'
  MACRO: 0x44, // 'D'
  BODYEOB: 0x45, // 'E'
  HELO: 0x48, // 'H'
  QUIT_NC: 0x4b, // 'K'
  HEADER: 0x4c, // 'L'
  MAIL: 0x4d, // 'M'
  EOH: 0x4e, // 'N'
  OPTNEG: 0x4f, // 'O'
  QUIT: 0x51, // 'Q'
  RCPT: 0x52, // 'R'
  DATA: 0x54, // 'T'
  UNKNOWN: 0x55, // 'U'
});

/** Replies to the MTA (SMFIR_*) that this daemon sends. The OPTNEG reply reuses SMFIC.OPTNEG. */
const SMFIR = Object.freeze({
  ACCEPT: 0x61, // 'a'
  CONTINUE: 0x63, // 'c'
  REJECT: 0x72, // 'r'
  TEMPFAIL: 0x74, // 't'
  REPLYCODE: 0x79, // 'y'
});

/** Protocol flags (SMFIP_*): steps the milter does not want, and steps it will not answer. */
export const SMFIP = Object.freeze({
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  SKIP: 0x400,
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  HDR_LEADSPC: 0x100000,
});

/** Action flags (SMFIF_*). Only SETSYMLIST is ever requested here: we never modify messages. */
export const SMFIF = Object.freeze({
  ADDHDRS: 0x1,
  CHGBODY: 0x2,
  ADDRCPT: 0x4,
  DELRCPT: 0x8,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
});

/** Macro list stages (SMFIM_*) used in the symbol lists of the OPTNEG reply. */
export const SMFIM = Object.freeze({
  CONNECT: 0,
  HELO: 1,
  ENVFROM: 2,
  ENVRCPT: 3,
  DATA: 4,
  EOM: 5,
  EOH: 6,
});

export const MILTER_CODEC_ERROR_KINDS = Object.freeze([
  'packet_too_large',
  'empty_packet',
  'malformed',
  'unknown_command',
] as const);
export type MilterCodecErrorKind = (typeof MILTER_CODEC_ERROR_KINDS)[number];

export class MilterCodecError extends Error {
  override readonly name = 'MilterCodecError';
  readonly kind: MilterCodecErrorKind;
  /** The command byte as a character, when known. */
  readonly command: string | null;
  /** Commands completed by the same push() before the fault: a server answers them, then closes. */
  completed: readonly MilterCommand[] = [];
  constructor(kind: MilterCodecErrorKind, message: string, command: number | null = null) {
    super(message);
    this.kind = kind;
    this.command = command === null ? null : String.fromCharCode(command);
  }
}

export type ConnectFamily = 'inet' | 'inet6' | 'unix' | 'unknown';

/** A decoded MTA command. `header`..`unknown` are only counted: we negotiate them away. */
export type MilterCommand =
  | { readonly type: 'optneg'; readonly version: number; readonly actions: number; readonly protocol: number }
  | { readonly type: 'macro'; readonly stage: string; readonly macros: ReadonlyArray<readonly [string, string]> }
  | {
      readonly type: 'connect';
      readonly hostname: string;
      readonly family: ConnectFamily;
      readonly port: number | null;
      readonly address: string | null;
    }
  | { readonly type: 'helo'; readonly name: string }
  | { readonly type: 'mail' | 'rcpt'; readonly args: readonly string[] }
  | {
      readonly type: 'header' | 'eoh' | 'body' | 'bodyeob' | 'data' | 'unknown';
      readonly dataBytes: number;
    }
  | { readonly type: 'abort' | 'quit' | 'quit_nc' };

const FAMILIES: Readonly<Record<number, ConnectFamily>> = {
  0x34: 'inet', // '4'
  0x36: 'inet6', // '6'
  0x4c: 'unix', // 'L'
  0x55: 'unknown', // 'U'
};

const KNOWN_COMMANDS = new Set<number>(Object.values(SMFIC));

/** Macro stages the MTA may announce in SMFIC_MACRO: the command the macros belong to. */
const MACRO_STAGES = new Set<number>([
  SMFIC.CONNECT,
  SMFIC.HELO,
  SMFIC.MAIL,
  SMFIC.RCPT,
  SMFIC.DATA,
  SMFIC.EOH,
  SMFIC.BODYEOB,
  SMFIC.HEADER,
  SMFIC.BODY,
  SMFIC.UNKNOWN,
]);

export interface MilterDecoderOptions {
  /** Largest accepted length field (command byte + data): --max-milter-packet-bytes. */
  readonly maxPacketBytes: number;
}

/**
 * Incremental packet decoder. Feed it whatever the socket gives; it returns the complete commands.
 * It holds at most one partial packet (≤ maxPacketBytes + 4 bytes). After it throws a
 * MilterCodecError it stays failed: every later push throws the same error.
 */
export class MilterDecoder {
  readonly maxPacketBytes: number;
  private readonly header = Buffer.alloc(4);
  private headerFill = 0;
  private packet: Buffer | null = null;
  private packetFill = 0;
  private failure: MilterCodecError | null = null;

  constructor(options: MilterDecoderOptions) {
    const max = options.maxPacketBytes;
    if (!Number.isInteger(max) || max < 13) {
      // 13 = command byte + the 12 bytes of an OPTNEG: anything smaller cannot even negotiate.
      throw new RangeError(`maxPacketBytes must be an integer >= 13, got ${max}`);
    }
    this.maxPacketBytes = max;
  }

  /** Bytes held for a packet not yet complete. */
  get bufferedBytes(): number {
    return this.headerFill + this.packetFill;
  }

  /**
   * Memory held for the packet not yet complete: the whole packet is allocated when its length
   * arrives, so this is its announced size (plus the 4-byte header), not what has been received.
   */
  get heldBytes(): number {
    return 4 + (this.packet === null ? 0 : this.packet.length);
  }

  push(chunk: Buffer): MilterCommand[] {
    if (this.failure !== null) throw this.failure;
    const out: MilterCommand[] = [];
    try {
      let pos = 0;
      while (pos < chunk.length) {
        // A whole packet inside the chunk (the usual case: an MTA writes a session step at once) is
        // decoded in place, without a copy; decodePacket keeps only strings and numbers from it.
        if (this.packet === null && this.headerFill === 0 && chunk.length - pos >= 5) {
          const length = chunk.readUInt32BE(pos);
          if (length > 0 && length <= this.maxPacketBytes && chunk.length - pos - 4 >= length) {
            out.push(decodePacket(chunk.subarray(pos + 4, pos + 4 + length)));
            pos += 4 + length;
            continue;
          }
        }
        if (this.packet === null) {
          const take = Math.min(4 - this.headerFill, chunk.length - pos);
          chunk.copy(this.header, this.headerFill, pos, pos + take);
          this.headerFill += take;
          pos += take;
          if (this.headerFill < 4) break;
          const length = this.header.readUInt32BE(0);
          if (length === 0) throw new MilterCodecError('empty_packet', 'packet length 0');
          if (length > this.maxPacketBytes) {
            throw new MilterCodecError('packet_too_large', `packet length ${length} exceeds ${this.maxPacketBytes}`);
          }
          this.packet = Buffer.allocUnsafe(length);
          this.packetFill = 0;
        }
        const packet = this.packet;
        const take = Math.min(packet.length - this.packetFill, chunk.length - pos);
        chunk.copy(packet, this.packetFill, pos, pos + take);
        // Refuse an unknown command as soon as its byte arrives, not after its data.
        if (this.packetFill === 0 && take > 0 && !KNOWN_COMMANDS.has(packet[0]!)) {
          throw new MilterCodecError('unknown_command', `unknown command byte 0x${packet[0]!.toString(16)}`, packet[0]);
        }
        this.packetFill += take;
        pos += take;
        if (this.packetFill < packet.length) break;
        this.packet = null;
        this.packetFill = 0;
        this.headerFill = 0;
        out.push(decodePacket(packet));
      }
    } catch (err) {
      if (err instanceof MilterCodecError) {
        err.completed = out;
        this.failure = err;
        this.packet = null;
        this.packetFill = 0;
        this.headerFill = 0;
      }
      throw err;
    }
    return out;
  }
}

function malformed(cmd: number, why: string): MilterCodecError {
  return new MilterCodecError('malformed', `${String.fromCharCode(cmd)}: ${why}`, cmd);
}

/** NUL-terminated strings of data[start..]; the data must end with a NUL (or be empty). */
function readStrings(cmd: number, data: Buffer, start: number): string[] {
  const out: string[] = [];
  let pos = start;
  while (pos < data.length) {
    const nul = data.indexOf(0, pos);
    if (nul === -1) throw malformed(cmd, 'string without NUL terminator');
    out.push(data.toString('utf8', pos, nul));
    pos = nul + 1;
  }
  return out;
}

/** Decodes one complete packet (command byte + data). Exported for tests and tools. */
export function decodePacket(packet: Buffer): MilterCommand {
  if (packet.length === 0) throw new MilterCodecError('empty_packet', 'packet length 0');
  const cmd = packet[0]!;
  const data = packet.subarray(1);
  switch (cmd) {
    case SMFIC.OPTNEG: {
      // Trailing bytes are tolerated (libmilter does the same): only the first 12 carry meaning.
      if (data.length < 12) throw malformed(cmd, `OPTNEG needs 12 bytes, got ${data.length}`);
      return { type: 'optneg', version: data.readUInt32BE(0), actions: data.readUInt32BE(4), protocol: data.readUInt32BE(8) };
    }
    case SMFIC.MACRO: {
      if (data.length < 1) throw malformed(cmd, 'MACRO without a stage');
      const stage = data[0]!;
      if (!MACRO_STAGES.has(stage)) throw malformed(cmd, `MACRO for unknown stage 0x${stage.toString(16)}`);
      const strings = readStrings(cmd, data, 1);
      if (strings.length % 2 !== 0) throw malformed(cmd, 'MACRO name without a value');
      const macros: Array<readonly [string, string]> = [];
      for (let i = 0; i < strings.length; i += 2) macros.push([strings[i]!, strings[i + 1]!]);
      return { type: 'macro', stage: String.fromCharCode(stage), macros };
    }
    case SMFIC.CONNECT: {
      const nul = data.indexOf(0);
      if (nul === -1) throw malformed(cmd, 'CONNECT hostname without NUL');
      const hostname = data.toString('utf8', 0, nul);
      const familyByte = data[nul + 1];
      if (familyByte === undefined) throw malformed(cmd, 'CONNECT without address family');
      const family = FAMILIES[familyByte];
      if (family === undefined) throw malformed(cmd, `CONNECT with unknown family 0x${familyByte.toString(16)}`);
      const rest = nul + 2;
      if (family === 'unknown') {
        if (rest !== data.length) throw malformed(cmd, 'CONNECT family U followed by data');
        return { type: 'connect', hostname, family, port: null, address: null };
      }
      if (data.length < rest + 3) throw malformed(cmd, 'CONNECT too short for port and address');
      const port = data.readUInt16BE(rest);
      const strings = readStrings(cmd, data, rest + 2);
      if (strings.length !== 1) throw malformed(cmd, 'CONNECT needs exactly one address string');
      return { type: 'connect', hostname, family, port, address: strings[0]! };
    }
    case SMFIC.HELO: {
      const strings = readStrings(cmd, data, 0);
      if (strings.length !== 1) throw malformed(cmd, 'HELO needs exactly one string');
      return { type: 'helo', name: strings[0]! };
    }
    case SMFIC.MAIL:
    case SMFIC.RCPT: {
      const args = readStrings(cmd, data, 0);
      if (args.length === 0) throw malformed(cmd, 'address missing');
      return { type: cmd === SMFIC.MAIL ? 'mail' : 'rcpt', args };
    }
    case SMFIC.HEADER:
      return { type: 'header', dataBytes: data.length };
    case SMFIC.EOH:
      return { type: 'eoh', dataBytes: data.length };
    case SMFIC.BODY:
      return { type: 'body', dataBytes: data.length };
    case SMFIC.BODYEOB:
      return { type: 'bodyeob', dataBytes: data.length };
    case SMFIC.DATA:
      return { type: 'data', dataBytes: data.length };
    case SMFIC.UNKNOWN:
      return { type: 'unknown', dataBytes: data.length };
    case SMFIC.ABORT:
      return { type: 'abort' };
    case SMFIC.QUIT:
      return { type: 'quit' };
    case SMFIC.QUIT_NC:
      return { type: 'quit_nc' };
    default:
      throw new MilterCodecError('unknown_command', `unknown command byte 0x${cmd.toString(16)}`, cmd);
  }
}

// ---------------------------------------------------------------------------------------------
// Encoders

function frame(cmd: number, data: Buffer | null): Buffer {
  const dataLength = data === null ? 0 : data.length;
  const out = Buffer.allocUnsafe(5 + dataLength);
  out.writeUInt32BE(1 + dataLength, 0);
  out[4] = cmd;
  if (data !== null) data.copy(out, 5);
  return out;
}

/** One symbol list of the OPTNEG reply: the macros the MTA should send at `stage` (an SMFIM value). */
export interface MilterSymList {
  readonly stage: number;
  readonly names: readonly string[];
}

export interface OptnegReply {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
  /**
   * SETSYMLIST (protocol 6): libmilter sends the requested macro lists appended to the OPTNEG reply
   * as (uint32 stage, NUL-terminated space-separated names) pairs; Postfix and Sendmail read them
   * there when the milter also sets SMFIF_SETSYMLIST. Empty or absent: the MTA's own lists apply.
   */
  readonly symlists?: readonly MilterSymList[];
}

const MACRO_NAME = /^[\x21-\x7e]+$/;

export function encodeOptnegReply(reply: OptnegReply): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.allocUnsafe(12);
  head.writeUInt32BE(reply.version >>> 0, 0);
  head.writeUInt32BE(reply.actions >>> 0, 4);
  head.writeUInt32BE(reply.protocol >>> 0, 8);
  parts.push(head);
  for (const list of reply.symlists ?? []) {
    if (!Number.isInteger(list.stage) || list.stage < SMFIM.CONNECT || list.stage > SMFIM.EOH) {
      throw new RangeError(`unknown macro stage ${list.stage}`);
    }
    for (const name of list.names) {
      if (!MACRO_NAME.test(name)) throw new RangeError(`invalid macro name ${JSON.stringify(name)}`);
    }
    const stage = Buffer.allocUnsafe(4);
    stage.writeUInt32BE(list.stage, 0);
    parts.push(stage, Buffer.from(`${list.names.join(' ')}\0`, 'ascii'));
  }
  return frame(SMFIC.OPTNEG, Buffer.concat(parts));
}

export function encodeContinue(): Buffer {
  return frame(SMFIR.CONTINUE, null);
}

export function encodeAccept(): Buffer {
  return frame(SMFIR.ACCEPT, null);
}

export function encodeTempfail(): Buffer {
  return frame(SMFIR.TEMPFAIL, null);
}

export function encodeReject(): Buffer {
  return frame(SMFIR.REJECT, null);
}

/** RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF. */
const MAX_REPLY_LINE = 510;

/**
 * SMFIR_REPLYCODE with `<smtpCode> <text>`, e.g. ('550', '5.7.1 Domaine ... / sender ...').
 * The code must be 4xx/5xx and the text must open with an enhanced code of the same class (Postfix
 * refuses anything else as a malformed reply). The text is made single-line printable ASCII (any
 * other character becomes '?': SMTP replies are ASCII and CR/LF would forge reply lines), cut to
 * fit one reply line, then every '%' is doubled because Sendmail uses the reply as a format
 * string and Postfix undoes the doubling.
 */
export function encodeReplyCode(smtpCode: string, text: string): Buffer {
  if (!/^[45][0-9][0-9]$/.test(smtpCode)) throw new RangeError(`reply code must be 4xx or 5xx, got ${JSON.stringify(smtpCode)}`);
  if (!/^[45]\.[0-9]{1,3}\.[0-9]{1,3}( |$)/.test(text) || text[0] !== smtpCode[0]) {
    throw new RangeError(`reply text must start with a ${smtpCode[0]}.x.y enhanced code`);
  }
  const ascii = text.replace(/[^\x20-\x7e]/g, '?').slice(0, MAX_REPLY_LINE - 4);
  const line = `${smtpCode} ${ascii}`.replace(/%/g, '%%');
  return frame(SMFIR.REPLYCODE, Buffer.from(`${line}\0`, 'ascii'));
}

// ---------------------------------------------------------------------------------------------
// Command encoders: what an MTA sends. Used by tests and by the scripted test client.

function strings(values: readonly string[]): Buffer {
  return Buffer.from(values.map((v) => `${v}\0`).join(''), 'utf8');
}

export function encodeOptneg(version: number, actions: number, protocol: number): Buffer {
  const data = Buffer.allocUnsafe(12);
  data.writeUInt32BE(version >>> 0, 0);
  data.writeUInt32BE(actions >>> 0, 4);
  data.writeUInt32BE(protocol >>> 0, 8);
  return frame(SMFIC.OPTNEG, data);
}

export function encodeMacro(stage: string, macros: ReadonlyArray<readonly [string, string]>): Buffer {
  if (stage.length !== 1) throw new RangeError('macro stage is one command character');
  return frame(SMFIC.MACRO, Buffer.concat([Buffer.from(stage, 'latin1'), strings(macros.flat())]));
}

export function encodeConnect(hostname: string, family: ConnectFamily, port: number, address: string): Buffer {
  const familyChar = { inet: '4', inet6: '6', unix: 'L', unknown: 'U' }[family];
  if (family === 'unknown') return frame(SMFIC.CONNECT, Buffer.concat([strings([hostname]), Buffer.from('U')]));
  const portBuf = Buffer.allocUnsafe(2);
  portBuf.writeUInt16BE(port, 0);
  return frame(SMFIC.CONNECT, Buffer.concat([strings([hostname]), Buffer.from(familyChar), portBuf, strings([address])]));
}

export function encodeHelo(name: string): Buffer {
  return frame(SMFIC.HELO, strings([name]));
}

export function encodeMail(args: readonly string[]): Buffer {
  return frame(SMFIC.MAIL, strings(args));
}

export function encodeRcpt(args: readonly string[]): Buffer {
  return frame(SMFIC.RCPT, strings(args));
}

/** A command with raw data (HEADER, BODY, EOH, BODYEOB, DATA, UNKNOWN, ABORT, QUIT, QUIT_NC). */
export function encodeRaw(cmd: number, data: Buffer | null = null): Buffer {
  return frame(cmd, data);
}

/** Splits a stream of replies (MTA side). Throws MilterCodecError on a bad length. Used by tests. */
export function splitPackets(buffer: Buffer, maxPacketBytes: number): { packets: Buffer[]; rest: Buffer } {
  const packets: Buffer[] = [];
  let pos = 0;
  while (buffer.length - pos >= 4) {
    const length = buffer.readUInt32BE(pos);
    if (length === 0) throw new MilterCodecError('empty_packet', 'packet length 0');
    if (length > maxPacketBytes) throw new MilterCodecError('packet_too_large', `packet length ${length}`);
    if (buffer.length - pos - 4 < length) break;
    packets.push(buffer.subarray(pos + 4, pos + 4 + length));
    pos += 4 + length;
  }
  return { packets, rest: buffer.subarray(pos) };
}
