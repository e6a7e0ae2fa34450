/**
 * Postfix socketmap protocol (socketmap_table(5)), bytes ⇄ requests and replies. Pure and
 * incremental: no socket, no clock. Framing is on bytes (netstrings `<len>:<payload>,`), decoding
 * after, on complete payloads only, so a chunk boundary inside a UTF-8 character or inside the
 * length prefix is harmless.
 *
 * Decisions (Postfix never exercises them; documented so others can rely on them):
 * - The length is 1 to 10 decimal digits (leading zeros allowed, as Postfix's own netstring reader
 *   allows them); anything else before the `:` is 'bad_length'.
 * - A length above maxRequestBytes is refused as soon as its digits say so ('request_too_large'),
 *   before any payload is buffered: Postfix itself refuses requests above 100 000 bytes.
 * - The byte after the payload must be `,` ('missing_comma').
 * - A payload is `<name> <key>`, split at the first space; no space or an empty name is
 *   'malformed_request'. The key may be empty and may contain spaces.
 * - A payload that is not valid UTF-8 is 'invalid_utf8' (Postfix sends UTF-8 or ASCII keys).
 * - EOF inside a netstring is 'truncated'; EOF between netstrings is a clean end.
 */
import { isUtf8 } from 'node:buffer';

export interface SocketmapLimits {
  /** Payload bytes of one request netstring. */
  readonly maxRequestBytes: number;
}

export interface SocketmapRequest {
  readonly name: string;
  readonly key: string;
}

export type SocketmapCodecErrorKind =
  'bad_length' | 'request_too_large' | 'missing_comma' | 'malformed_request' | 'invalid_utf8' | 'truncated';

export const SOCKETMAP_CODEC_ERROR_KINDS: readonly SocketmapCodecErrorKind[] = Object.freeze([
  'bad_length',
  'request_too_large',
  'missing_comma',
  'malformed_request',
  'invalid_utf8',
  'truncated',
]);

/** Messages never quote the input: it is attacker-controlled and ends up in logs. */
export class SocketmapCodecError extends Error {
  override readonly name = 'SocketmapCodecError';
  readonly kind: SocketmapCodecErrorKind;
  /** Requests completed by the same push() before the fault: a server answers them, then closes. */
  completed: readonly SocketmapRequest[] = [];
  constructor(kind: SocketmapCodecErrorKind, message: string) {
    super(message);
    this.kind = kind;
  }
}

const COLON = 0x3a;
const COMMA = 0x2c;
const SPACE = 0x20;
const ZERO = 0x30;
const NINE = 0x39;
const MAX_LENGTH_DIGITS = 10;

const enum State {
  Length,
  Payload,
  Comma,
}

export class SocketmapDecoder {
  readonly #maxRequestBytes: number;
  #state = State.Length;
  #digits = 0;
  #length = 0;
  /** The payload being read: allocated once its length is known (bounded by maxRequestBytes). */
  #payload: Buffer | null = null;
  #filled = 0;
  #failure: SocketmapCodecError | null = null;
  #ended = false;

  constructor(limits: SocketmapLimits) {
    const max = limits.maxRequestBytes;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError('socketmap limit maxRequestBytes must be a positive integer');
    this.#maxRequestBytes = max;
  }

  /** Bytes received that are not yet part of a complete request. */
  get pendingBytes(): number {
    if (this.#state === State.Length) return this.#digits;
    return this.#digits + 1 + this.#filled;
  }

  /** Is a request partly received? */
  get midRequest(): boolean {
    return this.#state !== State.Length || this.#digits > 0;
  }

  /** Feeds bytes; returns the requests they complete. Throws SocketmapCodecError on the first violation; the decoder is then unusable. */
  push(chunk: Buffer): SocketmapRequest[] {
    this.#checkUsable();
    const out: SocketmapRequest[] = [];
    try {
      let i = 0;
      const n = chunk.length;
      while (i < n) {
        if (this.#state === State.Length) {
          const b = chunk[i++] as number;
          if (b === COLON) {
            if (this.#digits === 0) throw new SocketmapCodecError('bad_length', 'netstring without a length');
            this.#state = State.Payload;
            this.#filled = 0;
            this.#payload = this.#length === 0 ? null : Buffer.allocUnsafe(this.#length);
            if (this.#length === 0) this.#state = State.Comma;
          } else if (b >= ZERO && b <= NINE) {
            if (++this.#digits > MAX_LENGTH_DIGITS)
              throw new SocketmapCodecError('bad_length', `netstring length longer than ${MAX_LENGTH_DIGITS} digits`);
            this.#length = this.#length * 10 + (b - ZERO);
            if (this.#length > this.#maxRequestBytes) throw tooLarge(this.#maxRequestBytes);
          } else {
            throw new SocketmapCodecError('bad_length', 'netstring length holds a byte other than a digit');
          }
        } else if (this.#state === State.Payload) {
          const payload = this.#payload as Buffer;
          const take = Math.min(this.#length - this.#filled, n - i);
          chunk.copy(payload, this.#filled, i, i + take);
          this.#filled += take;
          i += take;
          if (this.#filled === this.#length) this.#state = State.Comma;
        } else {
          if (chunk[i++] !== COMMA) throw new SocketmapCodecError('missing_comma', 'netstring not followed by a comma');
          out.push(parseRequest(this.#payload));
          this.#state = State.Length;
          this.#digits = 0;
          this.#length = 0;
          this.#filled = 0;
          this.#payload = null;
        }
      }
    } catch (err) {
      if (err instanceof SocketmapCodecError) {
        err.completed = out;
        this.#failure = err;
      }
      throw err;
    }
    return out;
  }

  /** The peer shut down its side. Throws 'truncated' when a request was cut. */
  end(): void {
    this.#checkUsable();
    this.#ended = true;
    if (this.midRequest) {
      this.#failure = new SocketmapCodecError('truncated', 'connection closed in the middle of a netstring');
      throw this.#failure;
    }
  }

  #checkUsable(): void {
    if (this.#failure !== null)
      throw new SocketmapCodecError(this.#failure.kind, `decoder already failed: ${this.#failure.message}`);
    if (this.#ended) throw new Error('SocketmapDecoder used after end()');
  }
}

function tooLarge(max: number): SocketmapCodecError {
  return new SocketmapCodecError('request_too_large', `request larger than ${max} bytes`);
}

function parseRequest(payload: Buffer | null): SocketmapRequest {
  if (payload === null) throw new SocketmapCodecError('malformed_request', 'empty request');
  const space = payload.indexOf(SPACE);
  if (space === -1) throw new SocketmapCodecError('malformed_request', 'request without a space between map name and key');
  if (space === 0) throw new SocketmapCodecError('malformed_request', 'empty map name');
  // ASCII is the common case: a latin1 decode is then exact and skips the UTF-8 validation.
  const text = payload.toString('latin1');
  if (Buffer.byteLength(text, 'utf8') !== text.length) {
    if (!isUtf8(payload)) throw new SocketmapCodecError('invalid_utf8', 'request is not valid UTF-8');
    const utf8 = payload.toString('utf8');
    const at = utf8.indexOf(' ');
    return { name: utf8.slice(0, at), key: utf8.slice(at + 1) };
  }
  return { name: text.slice(0, space), key: text.slice(space + 1) };
}

export type SocketmapStatus = 'OK' | 'NOTFOUND' | 'TEMP' | 'PERM';

export interface SocketmapReply {
  readonly status: SocketmapStatus;
  /** The value (OK) or the reason (TEMP, PERM); empty for NOTFOUND. */
  readonly text: string;
}

// C0 controls and DEL have no place in a Postfix table value or reason.
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL = /[\x00-\x1f\x7f]/g;

/** `<len>:<status> <text>,` — `NOTFOUND ` keeps its trailing space, as socketmap_table(5) writes it. */
export function encodeReply(reply: SocketmapReply): Buffer {
  const text = reply.status === 'NOTFOUND' ? '' : reply.text.replace(CONTROL, ' ');
  return netstring(`${reply.status} ${text}`);
}

/** A request as Postfix writes it (tests, bench, the export self-check). */
export function encodeRequest(name: string, key: string): Buffer {
  if (name === '' || name.includes(' ')) throw new RangeError(`invalid socketmap name ${JSON.stringify(name)}`);
  return netstring(`${name} ${key}`);
}

export function netstring(text: string): Buffer {
  const payload = Buffer.from(text, 'utf8');
  return Buffer.concat([Buffer.from(`${payload.length}:`, 'latin1'), payload, Buffer.from(',', 'latin1')]);
}

export type ReplyDecodeResult = { readonly reply: SocketmapReply; readonly rest: Buffer } | null;

/**
 * Client side (tests, bench): the first complete reply in `buffer`, or null when more bytes are needed.
 * Throws SocketmapCodecError when the bytes are not a reply.
 */
export function decodeReply(buffer: Buffer): ReplyDecodeResult {
  const colon = buffer.indexOf(COLON);
  if (colon === -1) {
    if (buffer.length > MAX_LENGTH_DIGITS) throw new SocketmapCodecError('bad_length', 'reply length too long');
    return null;
  }
  const digits = buffer.toString('latin1', 0, colon);
  if (!/^[0-9]{1,10}$/.test(digits)) throw new SocketmapCodecError('bad_length', 'reply length is not decimal');
  const length = Number(digits);
  if (buffer.length < colon + 1 + length + 1) return null;
  if (buffer[colon + 1 + length] !== COMMA)
    throw new SocketmapCodecError('missing_comma', 'reply netstring not followed by a comma');
  const payload = buffer.toString('utf8', colon + 1, colon + 1 + length);
  const space = payload.indexOf(' ');
  const status = space === -1 ? payload : payload.slice(0, space);
  if (status !== 'OK' && status !== 'NOTFOUND' && status !== 'TEMP' && status !== 'PERM') {
    throw new SocketmapCodecError('malformed_request', 'reply status is not OK, NOTFOUND, TEMP or PERM');
  }
  return { reply: { status, text: space === -1 ? '' : payload.slice(space + 1) }, rest: buffer.subarray(colon + 2 + length) };
}
