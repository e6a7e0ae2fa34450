/**
 * What Milter macros say about TLS and the client certificate, for the decision. Pure.
 *
 * Two dialects (docs/mssante-rules.md §3, §5):
 * - Postfix: `{cert_subject}` / `{cert_issuer}` are the subject and issuer CNs, raw UTF-8, and are
 *   sent only when the client certificate chain verified. Postfix has no `{verify}`.
 * - Sendmail: `{cert_subject}` / `{cert_issuer}` are full DNs in OpenSSL slash form (certificate
 *   order, `\xHH` for non-ASCII bytes), xtext-encoded; they are set whether or not the chain
 *   verified, and `{verify}` says (`OK` only when it did).
 * A `{cert_subject}` without `{verify}` that is a full DN (slash or comma form) cannot be Postfix's
 * CN: it is a Sendmail whose `{verify}` was not asked for, and nothing says the chain verified, so
 * it is taken as unverified (`cert_missing`). A Postfix CN that merely looks like a DN is refused the
 * same way: the mistake can only cost a refusal, never a pass.
 */
import type { CertIdentity } from '../../trust/facts.js';
import { certFingerprints, type CertFingerprints } from '../../trust/fingerprint.js';
import { decodeXtext, parseDnCached } from '../../trust/dn.js';

export interface MilterCertView {
  /** `cn`: Postfix CN of a verified chain; `dn`: Sendmail full subject DN; `none`: no certificate reported. */
  readonly kind: 'cn' | 'dn' | 'none';
  /**
   * `cn`: the CN. `dn`: the slash-form DN, xtext decoded; its OpenSSL `\xHH`/`\/` escapes are left
   * for parseDn, which decodes them value by value after splitting, so that an escaped `/` inside a
   * value can never pass for an RDN separator (decoding the whole string first would let it).
   */
  readonly subject: string | null;
  /** Issuer as the MTA gives it (CN for Postfix, slash-form DN for Sendmail), decoded like subject. */
  readonly issuer: string | null;
  readonly verified: boolean;
}

const NONE: MilterCertView = Object.freeze({ kind: 'none', subject: null, issuer: null, verified: false });

function present(macros: ReadonlyMap<string, string>, name: string): string | null {
  const v = macros.get(name);
  return v === undefined || v === '' ? null : v;
}

export function certFromMacros(macros: ReadonlyMap<string, string>): MilterCertView {
  const verify = macros.get('{verify}');
  const subject = present(macros, '{cert_subject}');
  const issuer = present(macros, '{cert_issuer}');
  if (verify !== undefined) {
    if (subject === null) return NONE;
    return {
      kind: 'dn',
      subject: decodeXtext(subject),
      issuer: issuer === null ? null : decodeXtext(issuer),
      verified: verify === 'OK',
    };
  }
  if (subject === null) return NONE;
  if (looksLikeFullDn(subject)) {
    return { kind: 'dn', subject: decodeXtext(subject), issuer: issuer === null ? null : decodeXtext(issuer), verified: false };
  }
  return { kind: 'cn', subject, issuer, verified: true };
}

/** `type=` first (slash form `/C=FR/...`, comma form `CN=x,O=y`, an OID type), raw or xtext-encoded (`+3D`). */
const DN_START = /^\s*\/?\s*(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\s*(?:=|\+3D)/i;

function looksLikeFullDn(subject: string): boolean {
  return DN_START.test(subject);
}

export function tlsFromMacros(macros: ReadonlyMap<string, string>): { protocol: string | null; cipher: string | null } {
  return { protocol: present(macros, '{tls_version}'), cipher: present(macros, '{cipher}') };
}

/**
 * The certificate as Facts carry it, or null when none was reported. A Sendmail issuer DN is reduced
 * to its CN (Facts compare issuer CNs); an unparsable one gives null, as if unknown.
 */
export function certIdentityFromMacros(macros: ReadonlyMap<string, string>): CertIdentity | null {
  const view = certFromMacros(macros);
  if (view.kind === 'none' || view.subject === null) return null;
  if (view.kind === 'cn') return { kind: 'cn', cn: view.subject, issuerCn: view.issuer, verified: true };
  let issuerCn: string | null = null;
  if (view.issuer !== null) {
    const parsed = parseDnCached(view.issuer);
    issuerCn = parsed.ok ? parsed.dn.cn : null;
  }
  return { kind: 'dn', dn: view.subject, issuerCn, verified: view.verified };
}

/**
 * Sendmail's certificate fingerprint: `{cert_fp}` (digest per CertFingerprintAlgorithm) when set, else
 * `{cert_md5}`; colon form. Postfix sends neither (its Milter macros have no fingerprint): null.
 */
export function fingerprintsFromMacros(macros: ReadonlyMap<string, string>): CertFingerprints | null {
  const fp = present(macros, '{cert_fp}') ?? present(macros, '{cert_md5}');
  return certFingerprints(fp, undefined);
}
