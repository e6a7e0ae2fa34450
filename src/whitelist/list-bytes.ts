/**
 * Scans of a list's raw bytes, beside the parse: the checks that used to run on the document decoded
 * into one JavaScript string. That string cost twice the list's size in the list worker (the real
 * list has accents: UTF-16), 60 MB for a 30 MB list, at the worker's peak (issue #25). Each scan
 * answers exactly what the regular expression on the string answered; the tests compare both.
 */
import { DSIG } from './signature.js';

/** A Buffer over the same memory (no copy): Buffer.indexOf searches natively. */
function view(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const LT = 0x3c;
const COLON = 0x3a;

function isAsciiLetter(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
}

/** `\w` of a regular expression without the u flag, plus `.` and `-`. */
function isPrefixChar(b: number): boolean {
  return isAsciiLetter(b) || (b >= 0x30 && b <= 0x39) || b === 0x5f || b === 0x2e || b === 0x2d;
}

/** `\s` for the byte after a tag name: the ASCII ones (a non-ASCII space there is not well-formed XML). */
function isSpaceOrTagEnd(b: number | undefined): boolean {
  return b === 0x20 || (b !== undefined && b >= 0x09 && b <= 0x0d) || b === 0x2f || b === 0x3e;
}

/** `/<!DOCTYPE/i` anywhere in the text. */
export function declaresDoctype(bytes: Uint8Array): boolean {
  const buf = view(bytes);
  const name = 'DOCTYPE';
  for (let i = buf.indexOf('<!'); i !== -1; i = buf.indexOf('<!', i + 2)) {
    let k = 0;
    // & 0xdf upper-cases an ASCII letter and maps no other byte onto one.
    while (k < name.length && ((buf[i + 2 + k] ?? 0) & 0xdf) === name.charCodeAt(k)) k++;
    if (k === name.length) return true;
  }
  return false;
}

const REFERENCE_ALLOWED = /^&#(?:13|x[dD]);/;

/**
 * The ANS writes one numeric character reference, `&#13;` (the CR no document can write literally).
 * Any other one is refused, anywhere: `&#101;vil.fr` and `evil.fr` have one canonical form, and the
 * first implementation had a second reader that saw them differently. Returns what is wrong, or null.
 */
export function numericCharacterReference(bytes: Uint8Array): string | null {
  const buf = view(bytes);
  for (let i = buf.indexOf('&#'); i !== -1; i = buf.indexOf('&#', i + 2)) {
    if (!REFERENCE_ALLOWED.test(buf.toString('latin1', i, i + 8))) {
      const shown = JSON.stringify(buf.toString('utf8', i, i + 10));
      return `numeric character reference ${shown} in the list (only &#13; is written by the ANS)`;
    }
  }
  return null;
}

/**
 * Cheap test (no parse) used with --allow-unsigned: does the text name the XMLDSig namespace and
 * carry a Signature start tag (`<Signature` or `<prefix:Signature`, then a space, `/` or `>`)? A false
 * positive only means the list goes through the strict verifier.
 */
export function isSigned(bytes: Uint8Array): boolean {
  const buf = view(bytes);
  if (!buf.includes(DSIG)) return false;
  for (let i = buf.indexOf('Signature'); i !== -1; i = buf.indexOf('Signature', i + 1)) {
    if (!isSpaceOrTagEnd(buf[i + 9])) continue;
    const before = buf[i - 1];
    if (before === LT) return true;
    if (before !== COLON) continue;
    // The prefix is the longest run of name characters before the colon, right after a `<`.
    let start = i - 1;
    while (start > 0 && isPrefixChar(buf[start - 1]!)) start--;
    if (start < i - 1 && buf[start - 1] === LT && (isAsciiLetter(buf[start]!) || buf[start] === 0x5f)) return true;
  }
  return false;
}
