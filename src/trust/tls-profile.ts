/**
 * TLS profiles of Référentiel #1 (EX_OPE_5010). Enforcement belongs to the MTA; this check lets an
 * operator refuse, with a reason, sessions that slipped through a looser MTA configuration.
 * MTAs name things differently: Postfix `TLSv1.2` + OpenSSL cipher names, Exim `TLS1.2` + IANA names.
 */

export type TlsProfileName = 'off' | 'ref1-v1.6' | 'ref1-v1.7';
export const TLS_PROFILE_NAMES: readonly TlsProfileName[] = ['off', 'ref1-v1.6', 'ref1-v1.7'];

/** OpenSSL name → IANA name, for the suites the référentiel names. */
const OPENSSL_TO_IANA: Readonly<Record<string, string>> = {
  'ECDHE-RSA-AES256-GCM-SHA384': 'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384',
  'ECDHE-RSA-AES128-GCM-SHA256': 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
  'ECDHE-RSA-AES256-SHA384': 'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384',
  'ECDHE-RSA-AES128-SHA256': 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256',
  'DHE-RSA-AES256-GCM-SHA384': 'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384',
  'DHE-RSA-AES128-GCM-SHA256': 'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256',
};

const TLS12_GCM = new Set([
  'TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384',
  'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
  'TLS_DHE_RSA_WITH_AES_256_GCM_SHA384',
  'TLS_DHE_RSA_WITH_AES_128_GCM_SHA256',
]);
const TLS12_CBC = new Set(['TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384', 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256']);

export type TlsVersion = '1.0' | '1.1' | '1.2' | '1.3' | 'ssl' | 'unknown';

/** `TLSv1.2` (OpenSSL/Postfix), `TLS1.2` (Exim GnuTLS), `TLSv1` → '1.0'. */
function tlsVersion(protocol: string): TlsVersion {
  const m = /^(?:TLS|tls)v?(\d)(?:\.(\d))?$/.exec(protocol.trim());
  if (m === null) return /^SSL/i.test(protocol.trim()) ? 'ssl' : 'unknown';
  const v = `${m[1]}.${m[2] ?? '0'}`;
  return v === '1.0' || v === '1.1' || v === '1.2' || v === '1.3' ? v : 'unknown';
}

/** IANA name of a cipher given in either naming; unknown names come back upper-cased. */
function ianaCipher(cipher: string): string {
  const c = cipher.trim();
  return OPENSSL_TO_IANA[c] ?? c.toUpperCase();
}

export function tlsProfileAllows(profile: TlsProfileName, protocol: string, cipher: string | null): boolean {
  if (profile === 'off') return true;
  const version = tlsVersion(protocol);
  if (version === '1.3') {
    // Every TLS 1.3 suite is AEAD; Exim may report a TLS 1.2-style name for 1.3 sessions (rules §4).
    return profile === 'ref1-v1.7';
  }
  if (version !== '1.2' || cipher === null) return false;
  const name = ianaCipher(cipher);
  return TLS12_GCM.has(name) || (profile === 'ref1-v1.6' && TLS12_CBC.has(name));
}
