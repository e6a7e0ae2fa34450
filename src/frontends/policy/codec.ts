/**
 * Postfix policy delegation protocol, bytes ⇄ requests and replies. Pure and incremental: no socket,
 * no clock. Framing happens on bytes (find LF), decoding after, on complete lines only, so a chunk
 * boundary inside a UTF-8 character is harmless. The hot path frames on a latin1 decode of the chunk
 * (one character per byte, so that is still framing on bytes) and only a line holding a byte ≥ 0x80
 * is decoded again as UTF-8; a line cut by a chunk boundary is completed on bytes.
 *
 * Decisions (Postfix never exercises them; documented so others can rely on them):
 * - A line ends with LF; one CR before it is dropped. Any other byte, CR included, belongs to the value.
 * - A line is split at its first `=`; values may contain `=`. A line without `=`, or with an empty
 *   name, is malformed.
 * - A duplicate attribute name is an error ('duplicate_attribute'), not "last one wins": Postfix never
 *   repeats one, so a repeat means a client smuggled a second `ccert_subject` (or the like) into a value.
 * - An empty line with no attribute before it is malformed (an empty request is not a policy request).
 * - At EOF (Exim's `${readsocket}` writes its request and shuts down), pending attributes form a
 *   request even without the empty line, and a last line without LF counts as a line. A last line
 *   with no `=` at all is reported as 'truncated'.
 * - maxRequestBytes counts the request as it is on the wire, terminating empty line included; a
 *   request ended by EOF counts as if that line were there.
 */
import { isUtf8 } from 'node:buffer';

export interface PolicyLimits {
  /** Bytes of one line, its `\r\n` or `\n` not counted. */
  readonly maxLineBytes: number;
  /** Bytes of one request on the wire, line ends and the terminating empty line included. */
  readonly maxRequestBytes: number;
  readonly maxAttributes: number;
}

/** Attribute name → value. Names are unique (see duplicate_attribute). */
export type PolicyRequest = ReadonlyMap<string, string>;

export type PolicyCodecErrorKind =
  | 'line_too_long'
  | 'request_too_large'
  | 'too_many_attributes'
  | 'duplicate_attribute'
  | 'malformed_line'
  | 'invalid_utf8'
  | 'truncated';

export const POLICY_CODEC_ERROR_KINDS: readonly PolicyCodecErrorKind[] = Object.freeze([
  'line_too_long',
  'request_too_large',
  'too_many_attributes',
  'duplicate_attribute',
  'malformed_line',
  'invalid_utf8',
  'truncated',
]);

/** Messages never quote the input: it is attacker-controlled and ends up in logs. */
export class PolicyCodecError extends Error {
  override readonly name = 'PolicyCodecError';
  readonly kind: PolicyCodecErrorKind;
  /** Requests completed by the same push() before the fault: a server answers them, then closes. */
  completed: readonly PolicyRequest[] = [];
  constructor(kind: PolicyCodecErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

const LF = 0x0a;
const CR = 0x0d;
const EQ = 0x3d;
/** Global for lastIndex: finds the next byte ≥ 0x80 in a latin1-decoded chunk. */
// eslint-disable-next-line no-control-regex -- the range starts at NUL on purpose: every ASCII byte
const NON_ASCII = /[^\x00-\x7f]/g;

export class PolicyDecoder {
  readonly #limits: PolicyLimits;
  /** Holds the current unterminated line when it spans chunks: at most maxLineBytes + 1 (a CR). */
  #lineBuf: Buffer | null = null;
  #partialBytes = 0;
  /** Wire bytes of the complete lines of the request being read. */
  #requestBytes = 0;
  #attrs = new Map<string, string>();
  #failure: PolicyCodecError | null = null;
  #ended = false;

  constructor(limits: PolicyLimits) {
    for (const key of ['maxLineBytes', 'maxRequestBytes', 'maxAttributes'] as const) {
      const value = limits[key];
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`policy limit ${key} must be a positive integer`);
    }
    this.#limits = limits;
  }

  /** Bytes received and not yet part of a complete request: at most maxRequestBytes + maxLineBytes. */
  get pendingBytes(): number {
    return this.#requestBytes + this.#partialBytes;
  }

  /** Feeds bytes; returns the requests they complete. Throws PolicyCodecError on the first violation; the decoder is then unusable. */
  push(chunk: Buffer): PolicyRequest[] {
    this.#checkUsable();
    const out: PolicyRequest[] = [];
    try {
      let start = 0;
      if (this.#partialBytes > 0) {
        // The line begun in an earlier chunk: completed on bytes, it is rare (a chunk ends inside a line).
        const lf = chunk.indexOf(LF);
        if (lf === -1) {
          this.#keepPartial(chunk, 0);
          return out;
        }
        const lineBytes = this.#partialBytes + lf;
        if (lineBytes > this.#limits.maxLineBytes + 1) throw lineTooLong(this.#limits);
        const buf = this.#lineBuf as Buffer;
        chunk.copy(buf, this.#partialBytes, 0, lf);
        this.#partialBytes = 0;
        const request = this.#line(buf, 0, lineBytes, lineBytes + 1);
        if (request !== null) out.push(request);
        start = lf + 1;
      }
      if (start < chunk.length) this.#lines(chunk, start, out);
    } catch (err) {
      if (err instanceof PolicyCodecError) {
        err.completed = out;
        this.#failure = err;
      }
      throw err;
    }
    return out;
  }

  /** The peer shut down its side. Returns the pending request, or null when nothing is pending. */
  end(): PolicyRequest | null {
    this.#checkUsable();
    this.#ended = true;
    try {
      if (this.#partialBytes > 0) {
        const buf = this.#lineBuf as Buffer;
        const bytes = this.#partialBytes;
        const content = buf[bytes - 1] === CR ? bytes - 1 : bytes;
        const eq = buf.indexOf(EQ);
        if (content > 0 && (eq === -1 || eq >= content)) {
          throw new PolicyCodecError('truncated', 'connection closed in the middle of a line');
        }
        this.#partialBytes = 0;
        // Counted with the LF it lacks, like a request ended by EOF is counted with its empty line.
        const request = this.#line(buf, 0, bytes, bytes + 1);
        if (request !== null) return request;
      }
      if (this.#attrs.size === 0) return null;
      const request = this.#attrs;
      this.#attrs = new Map();
      this.#requestBytes = 0;
      return request;
    } catch (err) {
      if (err instanceof PolicyCodecError) this.#failure = err;
      throw err;
    }
  }

  #checkUsable(): void {
    if (this.#failure !== null)
      throw new PolicyCodecError(this.#failure.kind, `decoder already failed: ${this.#failure.message}`);
    if (this.#ended) throw new Error('PolicyDecoder used after end()');
  }

  #keepPartial(chunk: Buffer, start: number): void {
    const total = this.#partialBytes + (chunk.length - start);
    const max = this.#limits.maxLineBytes;
    // A line may reach max + 1 bytes only if that last byte is the CR of a CRLF still to come.
    if (total > max + 1 || (total === max + 1 && chunk[chunk.length - 1] !== CR)) throw lineTooLong(this.#limits);
    this.#lineBuf ??= Buffer.allocUnsafe(max + 1);
    chunk.copy(this.#lineBuf, this.#partialBytes, start);
    this.#partialBytes = total;
  }

  /**
   * The lines of chunk[from, ...): one latin1 decode for the whole chunk (a character per byte, so
   * string offsets are byte offsets), then lines are cut in the string. A line holding a byte ≥ 0x80
   * takes the byte path (#line), which decodes and checks it as UTF-8; Postfix xtext-encodes
   * non-ASCII, so that is rare.
   */
  #lines(chunk: Buffer, from: number, out: PolicyRequest[]): void {
    const text = chunk.toString('latin1', from);
    const maxWire = this.#limits.maxLineBytes + 1;
    // Every character of a latin1 string under 0x80 is one UTF-8 byte: equal lengths mean pure ASCII,
    // checked natively (a regex or a byte loop costs ~1 ns a byte, this ~30 ns a chunk).
    let nonAscii = Buffer.byteLength(text, 'utf8') === text.length ? text.length : nextNonAscii(text, 0);
    let pos = 0;
    while (pos < text.length) {
      const lf = text.indexOf('\n', pos);
      if (lf === -1) {
        this.#keepPartial(chunk, from + pos);
        return;
      }
      // One CR may precede the LF; anything longer is over the limit whatever the last byte.
      if (lf - pos > maxWire) throw lineTooLong(this.#limits);
      let request: PolicyRequest | null;
      if (nonAscii < lf) {
        request = this.#line(chunk, from + pos, from + lf, lf - pos + 1);
        nonAscii = nextNonAscii(text, lf + 1);
      } else {
        request = this.#asciiLine(text, pos, lf);
      }
      if (request !== null) out.push(request);
      pos = lf + 1;
    }
  }

  /** #line for text[start, end) known to be ASCII (so already decoded, and valid UTF-8). */
  #asciiLine(text: string, start: number, end: number): PolicyRequest | null {
    const limits = this.#limits;
    const stop = end > start && text.charCodeAt(end - 1) === CR ? end - 1 : end;
    if (stop - start > limits.maxLineBytes) throw lineTooLong(limits);
    this.#requestBytes += end - start + 1;
    if (this.#requestBytes > limits.maxRequestBytes) throw requestTooLarge(limits);
    if (stop === start) return this.#endOfRequest();
    if (this.#requestBytes >= limits.maxRequestBytes) throw requestTooLarge(limits);
    const eq = text.indexOf('=', start);
    if (eq === -1 || eq >= stop) throw new PolicyCodecError('malformed_line', 'line without =');
    if (eq === start) throw new PolicyCodecError('malformed_line', 'empty attribute name');
    this.#add(text.slice(start, eq), text.slice(eq + 1, stop));
    return null;
  }

  #endOfRequest(): PolicyRequest {
    if (this.#attrs.size === 0) throw new PolicyCodecError('malformed_line', 'empty line before any attribute');
    const request = this.#attrs;
    this.#attrs = new Map();
    this.#requestBytes = 0;
    return request;
  }

  #add(name: string, value: string): void {
    const attrs = this.#attrs;
    const size = attrs.size;
    // One lookup: a name already there leaves the size unchanged (the decoder fails anyway).
    attrs.set(name, value);
    if (attrs.size === size) throw new PolicyCodecError('duplicate_attribute', 'attribute repeated in one request');
    if (size >= this.#limits.maxAttributes) {
      throw new PolicyCodecError('too_many_attributes', `more than ${this.#limits.maxAttributes} attributes in one request`);
    }
  }

  /** The line buf[start, end) (LF excluded, CR kept), `wireBytes` long on the wire. Returns a request when the line ends one. */
  #line(buf: Buffer, start: number, end: number, wireBytes: number): PolicyRequest | null {
    const limits = this.#limits;
    const stop = end > start && buf[end - 1] === CR ? end - 1 : end;
    if (stop - start > limits.maxLineBytes) throw lineTooLong(limits);
    this.#requestBytes += wireBytes;
    if (this.#requestBytes > limits.maxRequestBytes) throw requestTooLarge(limits);
    if (stop === start) return this.#endOfRequest();
    // Still inside a request: it needs at least one more byte (its empty line), so it is already too large.
    if (this.#requestBytes >= limits.maxRequestBytes) throw requestTooLarge(limits);
    // Decoding never swallows an ASCII byte into a replacement character, so '=' survives it.
    const text = buf.toString('utf8', start, stop);
    const eq = text.indexOf('=');
    if (eq === -1) throw new PolicyCodecError('malformed_line', 'line without =');
    if (eq === 0) throw new PolicyCodecError('malformed_line', 'empty attribute name');
    // U+FFFD is rare in real input: only then pay for the exact check (it may also be a genuine, valid U+FFFD).
    if (text.includes('\uFFFD') && !isUtf8(buf.subarray(start, stop))) {
      throw new PolicyCodecError('invalid_utf8', 'line is not valid UTF-8');
    }
    this.#add(text.slice(0, eq), text.slice(eq + 1));
    return null;
  }
}

/** Offset of the first character ≥ 0x80 of text from `from`, or text.length. */
function nextNonAscii(text: string, from: number): number {
  NON_ASCII.lastIndex = from;
  return NON_ASCII.test(text) ? NON_ASCII.lastIndex - 1 : text.length;
}

function lineTooLong(limits: PolicyLimits): PolicyCodecError {
  return new PolicyCodecError('line_too_long', `line longer than ${limits.maxLineBytes} bytes`);
}

function requestTooLarge(limits: PolicyLimits): PolicyCodecError {
  return new PolicyCodecError('request_too_large', `request larger than ${limits.maxRequestBytes} bytes`);
}

// C0 controls and DEL: a CR or LF would end the reply early and let the rest pass for another attribute.
/* eslint-disable no-control-regex -- matching control characters is their purpose */
const CONTROL = /[\x00-\x1f\x7f]/g;
const HAS_CONTROL = /[\x00-\x1f\x7f]/;
/* eslint-enable no-control-regex */

/** Actions come from a fixed set of precomputed strings: a few dozen distinct ones at most. */
const REPLY_CACHE_MAX = 64;
const replyCache = new Map<string, Buffer>();

/**
 * `action=<action>\n\n`. Control characters in `action` become spaces so that it stays one line.
 * The Buffer is shared by every caller asking for the same action: never write into it.
 */
export function encodeReply(action: string): Buffer {
  let reply = replyCache.get(action);
  if (reply === undefined) {
    const safe = HAS_CONTROL.test(action) ? action.replace(CONTROL, ' ') : action;
    const text = `action=${safe}\n\n`;
    // Its own memory, not a slice of the shared pool that it would keep alive.
    reply = Buffer.allocUnsafeSlow(Buffer.byteLength(text, 'utf8'));
    reply.write(text, 'utf8');
    // Cleared rather than evicted one by one: a handler making up actions must not grow it, nor cost a LRU.
    if (replyCache.size >= REPLY_CACHE_MAX) replyCache.clear();
    replyCache.set(action, reply);
  }
  return reply;
}

/** A request as Postfix writes it (for the query command, tests and the bench). Refuses what cannot be framed. */
export function encodeRequest(attrs: Iterable<readonly [string, string]>): Buffer {
  let text = '';
  for (const [name, value] of attrs) {
    if (name === '' || name.includes('=') || /[\r\n]/.test(name)) {
      throw new RangeError(`invalid policy attribute name ${JSON.stringify(name)}`);
    }
    if (/[\r\n]/.test(value)) throw new RangeError(`policy attribute ${name}: value contains CR or LF`);
    text += `${name}=${value}\n`;
  }
  if (text === '') throw new RangeError('a policy request needs at least one attribute');
  return Buffer.from(`${text}\n`, 'utf8');
}
