/**
 * A Postfix policy request (or Exim's, with its extra attributes) → Facts + trace context.
 * Postfix gives `ccert_subject` = CN of a chain-verified certificate only (xtext-encoded); Exim gives
 * the full DN in `x_ccert_dn`, says in `x_ccert_verified` whether it verified the chain, and gives
 * the issuer DN in `x_ccert_issuer_dn` (its CN is what `--trusted-issuer-cn` compares).
 * Fingerprints (never used to decide, only recorded by the peer ledger): Postfix's `ccert_fingerprint`
 * and `ccert_pubkey_fingerprint`; Exim's ACL sends the certificate's SHA-256 as `x_ccert_fingerprint`.
 */
import { decodeXtext, parseDnCached } from '../../trust/dn.js';
import type { CertIdentity, Facts, Stage } from '../../trust/facts.js';
import { certFingerprints, type CertFingerprints } from '../../trust/fingerprint.js';
import type { TraceContext } from '../../observe/trace.js';

export type PolicyRequestView = ReadonlyMap<string, string>;

const STAGES: Readonly<Record<string, Stage>> = {
  RCPT: 'rcpt',
  MAIL: 'mail',
  CONNECT: 'connect',
  EHLO: 'helo',
  HELO: 'helo',
  DATA: 'data',
  'END-OF-MESSAGE': 'data',
  VRFY: 'vrfy',
  ETRN: 'etrn',
};

function nonEmpty(value: string | undefined): string | null {
  return value === undefined || value === '' ? null : value;
}

/**
 * A copy of `s` that does not share the memory of a larger string. The codec's values are slices of
 * the whole chunk they came in (up to 64 KiB): whatever outlives the request (a cache key) is detached.
 */
function detached(s: string): string {
  return (' ' + s).slice(1);
}

/** decodeXtext for the same few issuers (and the rare encoded subject) every request: ~0.5 µs saved each. */
const XTEXT_CACHE_MAX = 64;
const xtextCache = new Map<string, string>();

function xtext(value: string): string {
  if (!value.includes('+')) return value;
  let decoded = xtextCache.get(value);
  if (decoded === undefined) {
    decoded = decodeXtext(value);
    // Cleared rather than evicted one by one: distinct values sent on purpose cannot grow it.
    if (xtextCache.size >= XTEXT_CACHE_MAX) xtextCache.clear();
    xtextCache.set(detached(value), decoded);
  }
  return decoded;
}

function certFromRequest(request: PolicyRequestView): CertIdentity | null {
  const issuerRaw = nonEmpty(request.get('ccert_issuer'));
  const issuerCn = issuerRaw === null ? null : xtext(issuerRaw);
  const fullDn = nonEmpty(request.get('x_ccert_dn'));
  if (fullDn !== null) {
    // Escapes stay: parseDn decodes them per value, after splitting, so an escaped '/' cannot forge an RDN.
    // Detached: the DN becomes a key of parseDnCached's LRU.
    // The issuer of the same certificate, as the same MTA renders it; a DN that does not parse (or
    // has no CN) leaves no issuer, which --trusted-issuer-cn refuses.
    const issuerDn = nonEmpty(request.get('x_ccert_issuer_dn'));
    let dnIssuerCn = issuerCn;
    if (issuerDn !== null) {
      const parsed = parseDnCached(detached(issuerDn));
      dnIssuerCn = parsed.ok ? parsed.dn.cn : null;
    }
    return { kind: 'dn', dn: detached(fullDn), issuerCn: dnIssuerCn, verified: request.get('x_ccert_verified') === '1' };
  }
  const subject = nonEmpty(request.get('ccert_subject'));
  if (subject === null) return null;
  return { kind: 'cn', cn: xtext(subject), issuerCn, verified: true };
}

/** Exim's x_ccert_fingerprint (always SHA-256) when present, else Postfix's two attributes. */
export function fingerprintsFromRequest(request: PolicyRequestView): CertFingerprints | null {
  const exim = nonEmpty(request.get('x_ccert_fingerprint'));
  if (exim !== null) return certFingerprints(exim, undefined, 'sha256');
  return certFingerprints(request.get('ccert_fingerprint'), request.get('ccert_pubkey_fingerprint'));
}

export function factsFromRequest(request: PolicyRequestView): Facts {
  const sender = request.get('sender');
  return {
    frontend: 'policy',
    stage: STAGES[(request.get('protocol_state') ?? '').toUpperCase()] ?? 'other',
    tlsProtocol: nonEmpty(request.get('encryption_protocol')),
    tlsCipher: nonEmpty(request.get('encryption_cipher')),
    cert: certFromRequest(request),
    sender: sender === undefined ? null : sender,
    certFingerprints: fingerprintsFromRequest(request),
  };
}

export function traceFromRequest(request: PolicyRequestView, facts: Facts, connectionId: number): TraceContext {
  const cert = facts.cert;
  return {
    stage: facts.stage,
    connectionId,
    instance: request.get('instance'),
    queueId: request.get('queue_id'),
    clientAddress: request.get('client_address'),
    clientName: request.get('client_name'),
    helo: request.get('helo_name'),
    certSubject: cert === null ? undefined : cert.kind === 'dn' ? cert.dn : cert.cn,
    certIssuer: cert?.issuerCn ?? undefined,
    certFingerprint: request.get('ccert_fingerprint') ?? request.get('x_ccert_fingerprint'),
    tlsProtocol: facts.tlsProtocol ?? undefined,
    tlsCipher: facts.tlsCipher ?? undefined,
    sender: facts.sender,
    recipient: request.get('recipient'),
    size: request.get('size'),
  };
}
