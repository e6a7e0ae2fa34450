/**
 * Key usage and extended key usage of a certificate, read from its DER. Node's X509Certificate has
 * no key-usage bits (its `keyUsage` property returns the *extended* key usage OIDs), so this reads
 * the two extensions itself: a minimal DER walk over Certificate → tbsCertificate → [3] extensions.
 * The input is a certificate node already parsed, so malformed DER only means a refusal.
 */

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const OID_EMAIL_PROTECTION = '1.3.6.1.5.5.7.3.4';
const OID_ANY_EXTENDED_KEY_USAGE = '2.5.29.37.0';

/** RFC 5280 §4.2.1.3 bit numbers. */
const KEY_USAGE_BITS = [
  'digitalSignature',
  'nonRepudiation',
  'keyEncipherment',
  'dataEncipherment',
  'keyAgreement',
  'keyCertSign',
  'cRLSign',
  'encipherOnly',
  'decipherOnly',
] as const;
export type KeyUsageName = (typeof KEY_USAGE_BITS)[number];

export interface CertificateUsage {
  /** null: no key usage extension (any use allowed). */
  readonly keyUsage: ReadonlySet<KeyUsageName> | null;
  /** null: no extended key usage extension; otherwise its OIDs in dotted form. */
  readonly extendedKeyUsage: readonly string[] | null;
}

const OID_KEY_USAGE = '2.5.29.15';
const OID_EXT_KEY_USAGE = '2.5.29.37';

interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

class DerError extends Error {}

function tlv(der: Uint8Array, offset: number, limit: number): Tlv {
  if (offset + 2 > limit) throw new DerError('truncated DER');
  const tag = der[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte DER tag');
  let length = der[offset + 1] as number;
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError('unsupported DER length');
    if (start + count > limit) throw new DerError('truncated DER length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (der[start + i] as number);
    start += count;
  }
  const end = start + length;
  if (end > limit) throw new DerError('DER value runs past its container');
  return { tag, start, end };
}

function childrenOf(der: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end;) {
    const t = tlv(der, at, parent.end);
    out.push(t);
    at = t.end;
  }
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (t === undefined || t.tag !== tag) throw new DerError(`expected ${what}`);
  return t;
}

function decodeOid(der: Uint8Array, t: Tlv): string {
  if (t.end <= t.start) throw new DerError('empty OID');
  const arcs: number[] = [];
  let value = 0;
  for (let i = t.start; i < t.end; i++) {
    const b = der[i] as number;
    value = value * 128 + (b & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OID arc too large');
    if ((b & 0x80) === 0) {
      arcs.push(value);
      value = 0;
    }
  }
  if ((der[t.end - 1] as number) & 0x80) throw new DerError('truncated OID');
  const first = arcs[0] as number;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

/** Reads the key usage and extended key usage extensions; throws on DER it cannot walk. */
export function readCertificateUsage(der: Uint8Array): CertificateUsage {
  try {
    const certificate = expect(tlv(der, 0, der.length), 0x30, 'Certificate SEQUENCE');
    const tbs = expect(childrenOf(der, certificate)[0], 0x30, 'tbsCertificate SEQUENCE');
    const wrapper = childrenOf(der, tbs).find((t) => t.tag === 0xa3);
    let keyUsage: Set<KeyUsageName> | null = null;
    let extendedKeyUsage: string[] | null = null;
    if (wrapper === undefined) return { keyUsage, extendedKeyUsage };
    const extensions = expect(childrenOf(der, wrapper)[0], 0x30, 'Extensions SEQUENCE');
    for (const extension of childrenOf(der, extensions)) {
      const parts = childrenOf(der, expect(extension, 0x30, 'Extension SEQUENCE'));
      const oid = decodeOid(der, expect(parts[0], 0x06, 'extnID'));
      const value = expect(parts[parts.length - 1], 0x04, 'extnValue OCTET STRING');
      if (oid === OID_KEY_USAGE) {
        if (keyUsage !== null) throw new DerError('two key usage extensions');
        const bits = expect(tlv(der, value.start, value.end), 0x03, 'key usage BIT STRING');
        if (bits.end <= bits.start) throw new DerError('empty key usage BIT STRING');
        keyUsage = new Set();
        const unused = der[bits.start] as number;
        const total = (bits.end - bits.start - 1) * 8 - unused;
        for (let bit = 0; bit < total && bit < KEY_USAGE_BITS.length; bit++) {
          const byte = der[bits.start + 1 + (bit >> 3)] as number;
          if (byte & (0x80 >> (bit & 7))) keyUsage.add(KEY_USAGE_BITS[bit] as KeyUsageName);
        }
      } else if (oid === OID_EXT_KEY_USAGE) {
        if (extendedKeyUsage !== null) throw new DerError('two extended key usage extensions');
        const seq = expect(tlv(der, value.start, value.end), 0x30, 'extended key usage SEQUENCE');
        extendedKeyUsage = childrenOf(der, seq).map((t) => decodeOid(der, expect(t, 0x06, 'key purpose OID')));
      }
    }
    return { keyUsage, extendedKeyUsage };
  } catch (error) {
    if (error instanceof DerError)
      throw new Error(`cannot read the certificate's extensions: ${error.message}`, { cause: error });
    throw error;
  }
}

/**
 * Why this certificate may not sign a list, or null when it may: key usage (when present) must
 * allow digitalSignature or nonRepudiation; an extended key usage limited to TLS (serverAuth,
 * clientAuth — an operator's server certificate) is refused.
 */
export function signingUsageProblem(usage: CertificateUsage): string | null {
  const ku = usage.keyUsage;
  if (ku !== null && !ku.has('digitalSignature') && !ku.has('nonRepudiation')) {
    return `its key usage (${[...ku].join(', ') || 'none'}) allows neither digitalSignature nor nonRepudiation`;
  }
  const eku = usage.extendedKeyUsage;
  if (eku !== null) {
    if (eku.length === 0) return 'its extended key usage extension is empty';
    if (eku.every((oid) => oid === OID_SERVER_AUTH || oid === OID_CLIENT_AUTH))
      return `its extended key usage (${eku.map(ekuName).join(', ')}) is limited to TLS: an MTA's certificate, not a list signer`;
  }
  return null;
}

function ekuName(oid: string): string {
  switch (oid) {
    case OID_SERVER_AUTH:
      return 'serverAuth';
    case OID_CLIENT_AUTH:
      return 'clientAuth';
    case OID_EMAIL_PROTECTION:
      return 'emailProtection';
    case OID_ANY_EXTENDED_KEY_USAGE:
      return 'anyExtendedKeyUsage';
    default:
      return oid;
  }
}
