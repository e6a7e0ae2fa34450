/**
 * Certificate fingerprints as MTAs hand them over, checked strictly and written one way. Pure.
 *
 * - Postfix policy: `ccert_fingerprint` (digest of the certificate) and `ccert_pubkey_fingerprint`
 *   (digest of its public key), uppercase hex bytes separated by colons, digest per
 *   `smtpd_tls_fingerprint_digest` (md5 before compatibility level 3.6, sha256 from it on), xtext
 *   encoded like every `ccert_*` attribute (hex and colons need no escape, but `+3A` is legal).
 * - Exim (our ACL): `x_ccert_fingerprint` = `${sha256:$tls_in_peercert}`, 64 hex digits, no colons.
 * - Sendmail Milter: `{cert_md5}` (MD5, colon form), or `{cert_fp}` when CertFingerprintAlgorithm
 *   is set. Postfix's Milter macros carry no fingerprint at all.
 *
 * The digest is named from the length (16 bytes md5, 20 sha1, 32 sha256, 48 sha384, 64 sha512):
 * MTAs do not say which they used. A fingerprint is never used to decide trust, only to notice that
 * a listed identity shows another certificate; a value that is not exactly a digest is ignored.
 */

export type DigestName = 'md5' | 'sha1' | 'sha256' | 'sha384' | 'sha512';

const DIGEST_BY_BYTES: ReadonlyMap<number, DigestName> = new Map([
  [16, 'md5'],
  [20, 'sha1'],
  [32, 'sha256'],
  [48, 'sha384'],
  [64, 'sha512'],
]);

/** Longest value looked at: a sha512 in colon form is 191 characters (xtext `+3A` colons: 317). */
const MAX_VALUE_CHARS = 400;

/**
 * `sha256:9F:86:D0:…`: the digest name, then the bytes as uppercase hex pairs joined by colons (the
 * form Postfix logs and `openssl x509 -fingerprint` prints), whatever form the MTA used.
 */
export type Fingerprint = string;

export type FingerprintParse =
  { readonly ok: true; readonly fingerprint: Fingerprint } | { readonly ok: false; readonly reason: 'absent' | 'malformed' };

const ABSENT: FingerprintParse = Object.freeze({ ok: false, reason: 'absent' });
const MALFORMED: FingerprintParse = Object.freeze({ ok: false, reason: 'malformed' });

const COLON_FORM = /^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})+$/;
const BARE_FORM = /^(?:[0-9A-Fa-f]{2})+$/;

/**
 * One MTA value → a canonical fingerprint. `undefined` and '' are absent (no certificate, or an
 * MTA that does not send it); anything else that is not a whole digest of a known length, in colon
 * form or bare hex, is malformed. `onlyDigest`: the one digest this attribute may carry (Exim's is
 * always sha256).
 */
export function parseFingerprint(value: string | undefined | null, onlyDigest?: DigestName): FingerprintParse {
  const canonical = canonicalFingerprint(value, onlyDigest);
  return typeof canonical === 'string' ? { ok: true, fingerprint: canonical } : canonical;
}

const UPPER_COLON_FORM = /^[0-9A-F]{2}(?::[0-9A-F]{2})*$/;

/**
 * The digest of an uppercase colon-form value (what Postfix sends, every request): its length says
 * it, or null when `value` is not exactly that form. This runs twice on every policy request: the
 * compiled regexp is ~7× faster than a charCodeAt loop on the codec's values, which are slices of
 * the whole chunk (each charCodeAt goes through the slice to its parent).
 */
function upperColonDigest(value: string): DigestName | null {
  const n = value.length;
  if ((n + 1) % 3 !== 0) return null;
  const digest = DIGEST_BY_BYTES.get((n + 1) / 3);
  if (digest === undefined) return null;
  return UPPER_COLON_FORM.test(value) ? digest : null;
}

/** parseFingerprint without the result object: the canonical fingerprint, or why there is none. */
function canonicalFingerprint(value: string | undefined | null, onlyDigest?: DigestName): Fingerprint | FingerprintParse {
  if (value === undefined || value === null || value === '') return ABSENT;
  if (value.length > MAX_VALUE_CHARS) return MALFORMED;
  // The common form is already canonical: only the digest name goes in front.
  const fast = upperColonDigest(value);
  if (fast !== null) return onlyDigest !== undefined && fast !== onlyDigest ? MALFORMED : `${fast}:${value}`;
  // xtext: only `+3A` (a colon) can appear in a fingerprint; any other escape is not one.
  const text = value.includes('+') ? value.replace(/\+3A/gi, ':') : value;
  let hex: string;
  if (COLON_FORM.test(text)) hex = text.replace(/:/g, '');
  else if (BARE_FORM.test(text)) hex = text;
  else return MALFORMED;
  const digest = DIGEST_BY_BYTES.get(hex.length / 2);
  if (digest === undefined || (onlyDigest !== undefined && digest !== onlyDigest)) return MALFORMED;
  return `${digest}:${hex.toUpperCase().replace(/(..)(?!$)/g, '$1:')}`;
}

/** The digest name of a canonical fingerprint (`sha256:…` → `sha256`). */
export function digestOf(fingerprint: Fingerprint): string {
  const colon = fingerprint.indexOf(':');
  return colon === -1 ? '' : fingerprint.slice(0, colon);
}

const CANONICAL = /^(md5|sha1|sha256|sha384|sha512):([0-9A-F]{2}(?::[0-9A-F]{2})*)$/;

/** Whether `text` is a canonical fingerprint as parseFingerprint writes it (checked when read back from disk). */
export function isCanonicalFingerprint(text: unknown): text is Fingerprint {
  if (typeof text !== 'string' || text.length > MAX_VALUE_CHARS) return false;
  const m = CANONICAL.exec(text);
  if (m === null) return false;
  return DIGEST_BY_BYTES.get((m[2]!.length + 1) / 3) === m[1];
}

/** What the MTA said about the certificate's digests, for Facts. */
export interface CertFingerprints {
  /** Digest of the certificate; null when absent or malformed. */
  readonly cert: Fingerprint | null;
  /** Digest of its public key (Postfix only); null when absent or malformed. */
  readonly pubkey: Fingerprint | null;
  /** How many of the values given were malformed (ignored, counted). */
  readonly malformed: number;
}

/** Both values of one request → CertFingerprints, or null when the MTA gave neither. */
export function certFingerprints(
  cert: string | undefined | null,
  pubkey: string | undefined | null,
  onlyDigest?: DigestName,
): CertFingerprints | null {
  const c = canonicalFingerprint(cert, onlyDigest);
  const p = canonicalFingerprint(pubkey, onlyDigest);
  if (c === ABSENT && p === ABSENT) return null;
  return {
    cert: typeof c === 'string' ? c : null,
    pubkey: typeof p === 'string' ? p : null,
    malformed: (c === MALFORMED ? 1 : 0) + (p === MALFORMED ? 1 : 0),
  };
}
