/**
 * Distinguished names: parse, normalise, compare.
 *
 * The list writes subjects CN-first with comma separators (and many hand-made spelling variants);
 * MTAs render the same subject in certificate order, as RFC 4514 (GnuTLS), OpenSSL "oneline"
 * (`C = FR, ST = ...`) or OpenSSL's slash form (`/C=FR/ST=...`, `\xHH` for non-ASCII bytes), the
 * latter possibly xtext-encoded by Sendmail. Two spellings are the same subject iff their
 * normalised RDN sequences are equal in one order or its reverse, a multi-valued RDN (`+`) being
 * compared as a set of attributes: `Dn.key` encodes exactly that, so one Map lookup compares.
 *
 * Equality folds only what docs/mssante-rules.md §3 documents: ASCII letter case (plus the simple case
 * pairs of non-ASCII letters, never onto ASCII), ASCII spaces around separators and at the ends of
 * values, interior runs of ASCII spaces and U+00A0 (the real list writes `LA\u00a0 MUSSE`), RFC
 * 4514/1779 quotes and escapes, and `Paris(75)` = `Paris (75)`. Every other code point is
 * significant: no Unicode normalisation (NFC maps U+212A KELVIN SIGN to `K`), no trimming of
 * U+00A0, TAB, U+2000–U+200A, U+3000 or U+FEFF, so `mx.victim.test\u00a0` is not `mx.victim.test`.
 *
 * MTA-rendered DNs are attacker-controlled: input is bounded, scanning is linear (hand-written
 * scanners, no backtracking regex), and nothing here throws on bad input.
 */
import { LRUCache } from 'lru-cache';

/** One attribute (type and normalised value). */
export interface Ava {
  readonly type: string;
  readonly value: string;
}

/** One RDN: usually one attribute, several for a multi-valued RDN (`CN=x+SERIALNUMBER=1`), a set. */
export type Rdn = readonly Ava[];

export interface Dn {
  readonly rdns: readonly Rdn[];
  readonly cn: string | null;
  readonly key: string;
}

export type DnParseResult = { readonly ok: true; readonly dn: Dn } | { readonly ok: false; readonly error: string };

/** Longest DN text accepted (UTF-16 units). Real subjects are ~100 characters. */
export const MAX_DN_LENGTH = 4096;

// Longest attribute type we look ahead for; OIDs of real DN attributes are far shorter.
const MAX_TYPE_LENGTH = 64;

const TYPE_ALIASES: ReadonlyMap<string, string> = new Map([
  ['cn', 'CN'],
  ['commonname', 'CN'],
  ['2.5.4.3', 'CN'],
  ['ou', 'OU'],
  ['organizationalunitname', 'OU'],
  ['2.5.4.11', 'OU'],
  ['o', 'O'],
  ['organizationname', 'O'],
  ['2.5.4.10', 'O'],
  ['l', 'L'],
  ['localityname', 'L'],
  ['2.5.4.7', 'L'],
  // `S` is how Windows CryptoAPI names stateOrProvinceName.
  ['st', 'ST'],
  ['s', 'ST'],
  ['stateorprovincename', 'ST'],
  ['2.5.4.8', 'ST'],
  ['c', 'C'],
  ['countryname', 'C'],
  ['2.5.4.6', 'C'],
  ['e', 'EMAILADDRESS'],
  ['email', 'EMAILADDRESS'],
  ['emailaddress', 'EMAILADDRESS'],
  ['1.2.840.113549.1.9.1', 'EMAILADDRESS'],
  ['serialnumber', 'SERIALNUMBER'],
  ['2.5.4.5', 'SERIALNUMBER'],
  ['sn', 'SN'],
  ['surname', 'SN'],
  ['2.5.4.4', 'SN'],
  ['gn', 'GN'],
  ['givenname', 'GN'],
  ['2.5.4.42', 'GN'],
  ['dc', 'DC'],
  ['domaincomponent', 'DC'],
  ['0.9.2342.19200300.100.1.25', 'DC'],
  ['uid', 'UID'],
  ['userid', 'UID'],
  ['0.9.2342.19200300.100.1.1', 'UID'],
  ['street', 'STREET'],
  ['streetaddress', 'STREET'],
  ['2.5.4.9', 'STREET'],
  ['title', 'TITLE'],
  ['2.5.4.12', 'TITLE'],
  ['postalcode', 'POSTALCODE'],
  ['2.5.4.17', 'POSTALCODE'],
  ['organizationidentifier', 'ORGANIZATIONIDENTIFIER'],
  ['2.5.4.97', 'ORGANIZATIONIDENTIFIER'],
]);

/**
 * Names OpenSSL's slash form may carry (OBJ_nid2sn short names). Old OpenSSL does not escape '/'
 * inside values, so a '/' starts a new RDN only when a known type and '=' follow it.
 */
const SLASH_TYPES: ReadonlySet<string> = new Set([
  ...TYPE_ALIASES.keys(),
  'initials',
  'dnqualifier',
  'pseudonym',
  'generationqualifier',
  'businesscategory',
  'name',
  'description',
  'x500uniqueidentifier',
  'jurisdictionc',
  'jurisdictionst',
  'jurisdictionl',
  'unstructuredname',
  'unstructuredaddress',
  'role',
  'telephonenumber',
  'postofficebox',
]);

const fail = (error: string): DnParseResult => Object.freeze({ ok: false as const, error });

function isAlpha(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
function hexVal(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/** Canonical type name, or null when `raw` is neither a name (`[A-Za-z][A-Za-z0-9-]*`) nor an OID. */
function canonicalType(raw: string): string | null {
  let t = raw;
  if (t.length > 4 && (t.startsWith('OID.') || t.startsWith('oid.'))) t = t.slice(4);
  if (t.length === 0 || t.length > MAX_TYPE_LENGTH) return null;
  const first = t.charCodeAt(0);
  if (isAlpha(first)) {
    for (let i = 1; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (!isAlpha(c) && !isDigit(c) && c !== 0x2d) return null;
    }
  } else if (isDigit(first)) {
    let prevDot = false;
    for (let i = 1; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (c === 0x2e) {
        if (prevDot) return null;
        prevDot = true;
      } else if (isDigit(c)) prevDot = false;
      else return null;
    }
    if (prevDot) return null;
  } else return null;
  const lower = t.toLowerCase();
  return TYPE_ALIASES.get(lower) ?? (isAlpha(first) ? t.toUpperCase() : t);
}

/**
 * What `s` at `from` reads: `<spaces>TYPE<spaces>=` with a type known to OpenSSL's slash form
 * ('known'), with any other well-formed type ('other'), or no type at all ('none'). Bounded
 * look-ahead, so a scan that calls it at every character stays linear.
 */
function typeAt(s: string, from: number): 'known' | 'other' | 'none' {
  let i = from;
  const n = s.length;
  while (i < n && isHorizontalSpace(s.charCodeAt(i))) i++;
  const start = i;
  const limit = Math.min(n, start + MAX_TYPE_LENGTH + 4);
  while (i < limit) {
    const c = s.charCodeAt(i);
    if (!isAlpha(c) && !isDigit(c) && c !== 0x2d && c !== 0x2e) break;
    i++;
  }
  const end = i;
  if (end === start) return 'none';
  while (i < n && isHorizontalSpace(s.charCodeAt(i))) i++;
  if (i >= n || s.charCodeAt(i) !== 0x3d) return 'none';
  const raw = s.slice(start, end);
  if (canonicalType(raw) === null) return 'none';
  const lower = raw.toLowerCase();
  return SLASH_TYPES.has(lower) || isDigit(lower.charCodeAt(0)) || lower.startsWith('oid.') ? 'known' : 'other';
}

function typeFollows(s: string, from: number, knownOnly: boolean): boolean {
  const t = typeAt(s, from);
  return t === 'known' || (!knownOnly && t === 'other');
}

/**
 * Decodes a run of bytes as UTF-8; a byte that does not start a valid sequence is emitted as its
 * original spelling (`raw[i]`), so undecodable input stays visible instead of becoming U+FFFD.
 */
function decodeBytes(bytes: readonly number[], raw: readonly string[]): string {
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const b0 = bytes[i]!;
    if (b0 < 0x80) {
      out += String.fromCharCode(b0);
      i++;
      continue;
    }
    let len: number;
    let cp: number;
    let min: number;
    if (b0 >= 0xc2 && b0 <= 0xdf) [len, cp, min] = [2, b0 & 0x1f, 0x80];
    else if (b0 >= 0xe0 && b0 <= 0xef) [len, cp, min] = [3, b0 & 0x0f, 0x800];
    else if (b0 >= 0xf0 && b0 <= 0xf4) [len, cp, min] = [4, b0 & 0x07, 0x10000];
    else [len, cp, min] = [0, 0, 0];
    let ok = len > 0 && i + len <= bytes.length;
    for (let k = 1; ok && k < len; k++) {
      const b = bytes[i + k]!;
      if ((b & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (b & 0x3f);
    }
    if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (ok) {
      out += String.fromCodePoint(cp);
      i += len;
    } else {
      out += raw[i]!;
      i++;
    }
  }
  return out;
}

/** Two hex digits at `at` and `at + 1`. */
function hexPairAt(s: string, at: number): boolean {
  return at + 1 < s.length && hexVal(s.charCodeAt(at)) >= 0 && hexVal(s.charCodeAt(at + 1)) >= 0;
}

/**
 * The loop the escape decoders share. `byteWidth(i)`: how many characters at `i` write one escaped
 * byte, its two hex digits last (0: none). `literalSkip(i)`: how many escape characters precede a
 * literal character at `i` (0 or 1). Runs of escaped bytes are read as UTF-8; an invalid run stays
 * as written.
 */
function decodeEscapes(s: string, byteWidth: (i: number) => number, literalSkip: (i: number) => number): string {
  let out = '';
  const bytes: number[] = [];
  const raw: string[] = [];
  const n = s.length;
  let i = 0;
  while (i < n) {
    const width = byteWidth(i);
    if (width > 0) {
      bytes.push(hexVal(s.charCodeAt(i + width - 2)) * 16 + hexVal(s.charCodeAt(i + width - 1)));
      raw.push(s.slice(i, i + width));
      i += width;
      continue;
    }
    if (bytes.length > 0) {
      out += decodeBytes(bytes, raw);
      bytes.length = 0;
      raw.length = 0;
    }
    const skip = literalSkip(i);
    if (i + skip < n) out += s[i + skip];
    i += skip + 1;
  }
  if (bytes.length > 0) out += decodeBytes(bytes, raw);
  return out;
}

/** RFC 3461 xtext: `+XX` → byte; byte runs are read as UTF-8; anything invalid is left as is. */
export function decodeXtext(s: string): string {
  if (!s.includes('+')) return s;
  return decodeEscapes(
    s,
    (i) => (s.charCodeAt(i) === 0x2b && hexPairAt(s, i + 1) ? 3 : 0),
    () => 0,
  );
}

/**
 * OpenSSL X509_NAME_oneline escapes: `\xHH` → byte (runs read as UTF-8), `\\` → `\`, and the
 * `\/` `\+` that OpenSSL 3 puts before separators inside values. Other backslashes stay.
 */
export function decodeOpensslEscapes(s: string): string {
  if (!s.includes('\\')) return s;
  const isHexEscape = (i: number): boolean =>
    s.charCodeAt(i) === 0x5c && (s.charCodeAt(i + 1) | 0x20) === 0x78 && hexPairAt(s, i + 2);
  return decodeEscapes(
    s,
    (i) => (isHexEscape(i) ? 4 : 0),
    (i) => {
      const next = s.charCodeAt(i + 1);
      return s.charCodeAt(i) === 0x5c && (next === 0x5c || next === 0x2f || next === 0x2b) ? 1 : 0;
    },
  );
}

/**
 * RFC 4514/2253/1779 value escapes: `\HH` (and OpenSSL's `\xHH`) → byte, runs read as UTF-8;
 * `\c` → `c`. A dangling final backslash can only be what remains of an escaped trailing space
 * after trimming, which normalisation drops anyway.
 */
function unescapeRfc(s: string): string {
  if (!s.includes('\\')) return s;
  return decodeEscapes(
    s,
    (i) => {
      if (s.charCodeAt(i) !== 0x5c) return 0;
      if (hexPairAt(s, i + 1)) return 3;
      return (s.charCodeAt(i + 1) | 0x20) === 0x78 && hexPairAt(s, i + 2) ? 4 : 0;
    },
    (i) => (s.charCodeAt(i) === 0x5c ? 1 : 0),
  );
}

/** If `s` is exactly one quoted string (`"..."`, inner quotes escaped), its inside; else null. */
function quotedInner(s: string): string | null {
  if (s.length < 2 || s.charCodeAt(0) !== 0x22) return null;
  let i = 1;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === 0x22) return i === s.length - 1 ? s.slice(1, -1) : null;
    else i++;
  }
  return null;
}

// Interior runs of ASCII spaces and U+00A0, as the real list writes them. Nothing else is a space.
const SPACE_RUN = /[ \u00a0]+/g;

/** The only space folded around separators and at the ends of values: ASCII SPACE. */
function isHorizontalSpace(c: number): boolean {
  return c === 0x20;
}

/** Trim of ASCII spaces, by hand: an anchored regex would be quadratic on long runs. */
function trimSpaces(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isHorizontalSpace(s.charCodeAt(a))) a++;
  while (b > a && isHorizontalSpace(s.charCodeAt(b - 1))) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * Case fold that cannot merge distinct characters beyond letter case: ASCII letters, and a
 * non-ASCII letter only when its lower case is one non-ASCII code point whose upper case is the
 * letter again (É/é, Σ/σ). U+212A KELVIN SIGN (→ `k`), U+0130 (→ `i` + U+0307) and U+212B
 * ANGSTROM SIGN (→ `å`, whose upper case is U+00C5) stay as they are.
 */
function foldCase(v: string): string {
  let ascii = true;
  for (let i = 0; i < v.length; i++) {
    if (v.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) return v.toLowerCase();
  let out = '';
  for (const ch of v) {
    const c = ch.codePointAt(0)!;
    if (c <= 0x7f) {
      out += c >= 0x41 && c <= 0x5a ? String.fromCharCode(c + 0x20) : ch;
      continue;
    }
    const lower = ch.toLowerCase();
    const lc = lower.codePointAt(0)!;
    out +=
      lower !== ch && lc > 0x7f && lower.length === String.fromCodePoint(lc).length && lower.toUpperCase() === ch ? lower : ch;
  }
  return out;
}

/**
 * Decoded text → comparison form: ASCII spaces trimmed, interior space/U+00A0 runs → one space,
 * `X(75)` → `x (75)`, letter case folded. Nothing else: any other code point is significant.
 */
function canonicalText(s: string): string {
  let v = trimSpaces(s);
  // Only runs inside the value: a U+00A0 left at either end after trimming stays significant.
  v = v.replace(SPACE_RUN, (run, at: number) => (at > 0 && at + run.length < v.length ? ' ' : run));
  if (v.includes('(') || v.includes(')')) {
    v = v
      .replace(/([^ (])\(/g, '$1 (')
      .replace(/\( /g, '(')
      .replace(/ \)/g, ')');
  }
  return foldCase(v);
}

/**
 * A value as written in a comma-form DN → comparison form: trim, strip one pair of surrounding
 * quotes, unescape, then canonicalText.
 */
export function normaliseValue(value: string): string {
  const trimmed = trimSpaces(value);
  const inner = quotedInner(trimmed);
  return canonicalText(unescapeRfc(inner ?? trimmed));
}

/**
 * A bare CN as an MTA hands it (Postfix `ccert_subject` after xtext decoding): the certificate's
 * value itself, never DN text — so no quote stripping and no escape decoding, which would let a
 * certificate whose CN is `"mx.victim.fr"` or `mx\2evictim.fr` pass for `mx.victim.fr`.
 */
export function normaliseCn(cn: string): string {
  return canonicalText(cn);
}

function escapeKeyValue(v: string): string {
  return v.includes('\\') || v.includes(',') || v.includes('+') ? v.replace(/[\\,+]/g, (c) => `\\${c}`) : v;
}

/** Groups attributes into RDNs: `joined[i]` says attribute i was joined to the previous by `+`. */
function buildDn(avas: Ava[], joined: boolean[]): DnParseResult {
  if (avas.length === 0) return fail('empty DN');
  const rdns: Ava[][] = [];
  avas.forEach((a, i) => {
    if (joined[i] === true && rdns.length > 0) rdns[rdns.length - 1]!.push(a);
    else rdns.push([a]);
  });
  let cn: string | null = null;
  const parts: string[] = [];
  for (const rdn of rdns) {
    const members: string[] = [];
    for (const a of rdn) {
      if (a.type === 'CN') cn = a.value;
      members.push(`${a.type}=${escapeKeyValue(a.value)}`);
    }
    // A multi-valued RDN is a set: its members' order carries no meaning, their grouping does.
    parts.push(members.sort().join('+'));
  }
  const forward = parts.join(',');
  const backward = parts.reverse().join(',');
  const dn: Dn = Object.freeze({
    rdns: Object.freeze(rdns.map((r) => Object.freeze(r))),
    cn: cn === '' ? null : cn,
    key: backward < forward ? backward : forward,
  });
  return Object.freeze({ ok: true as const, dn });
}

/** RFC 4514 / RFC 1779 / GnuTLS / OpenSSL oneline: `TYPE=value` separated by `,` `;` or `+`. */
function parseCommaForm(s: string): DnParseResult {
  const avas: Ava[] = [];
  const joined: boolean[] = [];
  let plus = false;
  const n = s.length;
  let i = 0;
  for (;;) {
    let j = i;
    while (j < n) {
      const c = s.charCodeAt(j);
      if (c === 0x3d || c === 0x2c) break;
      j++;
    }
    if (j >= n || s.charCodeAt(j) !== 0x3d) {
      return fail(trimSpaces(s.slice(i, j)) === '' ? 'empty RDN' : "RDN without '='");
    }
    const type = canonicalType(trimSpaces(s.slice(i, j)));
    if (type === null) return fail('invalid attribute type');
    let k = j + 1;
    let sep = -1;
    while (k < n) {
      const c = s.charCodeAt(k);
      if (c === 0x5c) {
        if (k + 1 >= n) return fail('dangling escape');
        k += 2;
      } else if (c === 0x22) {
        // A quoted section — the whole value (RFC 1779) or part of it — hides separators.
        k++;
        while (k < n && s.charCodeAt(k) !== 0x22) k += s.charCodeAt(k) === 0x5c ? 2 : 1;
        if (k >= n) return fail('unbalanced quotes');
        k++;
      } else if (c === 0x2c) {
        sep = k;
        break;
      } else if ((c === 0x2b || c === 0x3b) && typeFollows(s, k + 1, false)) {
        // '+' (multi-valued RDN) and ';' (RFC 1779) separate only when an attribute follows:
        // the list writes them bare inside values.
        sep = k;
        break;
      } else k++;
    }
    avas.push(Object.freeze({ type, value: normaliseValue(s.slice(j + 1, sep < 0 ? n : sep)) }));
    joined.push(plus);
    if (sep < 0) break;
    plus = s.charCodeAt(sep) === 0x2b;
    i = sep + 1;
  }
  return buildDn(avas, joined);
}

/**
 * OpenSSL X509_NAME_oneline: `/TYPE=value...`, `+` between members of a multi-valued RDN. Old
 * OpenSSL escapes neither inside values, so a `/` or `+` separates only when a known type and `=`
 * follow; one followed by some other `TYPE=` could be either (an attribute OpenSSL has no name for,
 * or value text), so the DN is refused rather than guessed.
 */
function parseSlashForm(s: string): DnParseResult {
  const avas: Ava[] = [];
  const joined: boolean[] = [];
  let plus = false;
  const n = s.length;
  if (!typeFollows(s, 1, true)) return fail('invalid attribute type');
  let start = 1;
  let k = 1;
  for (;;) {
    // Scan to the next unescaped '/' or '+' that introduces an attribute.
    while (k < n) {
      const c = s.charCodeAt(k);
      if (c === 0x5c) k += 2;
      else if (c === 0x2f || c === 0x2b) {
        const t = typeAt(s, k + 1);
        if (t === 'known') break;
        if (t === 'other') return fail(`ambiguous '${s[k]}' in slash form`);
        k++;
      } else k++;
    }
    const end = Math.min(k, n);
    const seg = s.slice(start, end);
    const eq = seg.indexOf('=');
    if (eq < 0) return fail("RDN without '='");
    const type = canonicalType(trimSpaces(seg.slice(0, eq)));
    if (type === null) return fail('invalid attribute type');
    // Slash values have no quoting syntax: quotes are literal, as GnuTLS's unescaped `\"` are.
    avas.push(Object.freeze({ type, value: canonicalText(decodeOpensslEscapes(seg.slice(eq + 1))) }));
    joined.push(plus);
    if (end >= n) break;
    plus = s.charCodeAt(k) === 0x2b;
    start = k + 1;
    k = start;
  }
  return buildDn(avas, joined);
}

/** Parses a DN in comma form (any order) or OpenSSL slash form. Never throws. */
export function parseDn(text: string): DnParseResult {
  try {
    if (typeof text !== 'string') return fail('not a string');
    if (text.length > MAX_DN_LENGTH) return fail(`DN longer than ${MAX_DN_LENGTH} characters`);
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) return fail('control character in DN');
    }
    if (trimSpaces(text) === '') return fail('empty DN');
    // Leading space only: a trailing one may be escaped (`CN=x\ `); values trim their own.
    let start = 0;
    while (isHorizontalSpace(text.charCodeAt(start))) start++;
    const s = start === 0 ? text : text.slice(start);
    return s.charCodeAt(0) === 0x2f ? parseSlashForm(s) : parseCommaForm(s);
  } catch {
    // Defence in depth: the scanners are written not to throw; an attacker's string must not crash us.
    return fail('unparsable DN');
  }
}

const cache = new LRUCache<string, DnParseResult>({
  max: 10_000,
  // Bounded in memory too: an attacker can send many distinct long DNs.
  maxSize: 16 * 1024 * 1024,
  sizeCalculation: (_value, key) => 256 + 4 * key.length,
});

/** parseDn memoised (bounded LRU): the hot path parses the same few hundred subjects over and over. */
export function parseDnCached(text: string): DnParseResult {
  if (typeof text !== 'string' || text.length > MAX_DN_LENGTH) return parseDn(text);
  let r = cache.get(text);
  if (r === undefined) {
    r = parseDn(text);
    cache.set(text, r);
  }
  return r;
}

function escapeForDisplay(v: string): string {
  let out = '';
  for (let i = 0; i < v.length; i++) {
    const ch = v[i]!;
    const c = v.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029) {
      for (const b of Buffer.from(ch, 'utf8')) out += `\\${b.toString(16).toUpperCase().padStart(2, '0')}`;
    } else if (',+"\\<>;='.includes(ch) || (i === 0 && (ch === '#' || ch === ' ')) || (i === v.length - 1 && ch === ' ')) {
      out += `\\${ch}`;
    } else out += ch;
  }
  return out;
}

/** CN-first RFC 4514 rendering of the normalised DN, escaped so it stays one line in logs. */
export function formatDn(dn: Dn): string {
  const first = dn.rdns[0];
  const last = dn.rdns[dn.rdns.length - 1];
  const isCn = (r: Rdn | undefined): boolean => r !== undefined && r.some((a) => a.type === 'CN');
  const rdns = !isCn(first) && isCn(last) ? [...dn.rdns].reverse() : dn.rdns;
  return rdns.map((r) => r.map((a) => `${a.type}=${escapeForDisplay(a.value)}`).join('+')).join(',');
}
