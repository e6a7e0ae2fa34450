/**
 * decide(facts, index, policy): the one answer every MTA gets. Pure: no I/O, no clock; the only
 * state it touches is the memo of parsed DNs, which does not change its results.
 * Rules: docs/mssante-rules.md §1 (erratum §4.7.1.1 steps 3–5) and §6.
 */
import { normaliseCn, parseDnCached } from './dn.js';
import type { Facts } from './facts.js';
import { REASONS, type Reason } from './reasons.js';
import { tlsProfileAllows, type TlsProfileName } from './tls-profile.js';
import { normaliseDomain } from './domain.js';

/**
 * What decide() asks of the list in force (whitelist/whitelist-index.ts's WhitelistIndex). Declared here so that
 * trust/ depends on nothing of ours: the list pipeline depends on trust/, never the reverse.
 */
export interface ListedIdentities {
  hasDomain(domain: string): boolean;
  isDnListed(dnKey: string): boolean;
  isCnListed(cn: string): boolean;
  domainHasDn(domain: string, dnKey: string): boolean;
  domainHasCn(domain: string, cn: string): boolean;
  /** null: the domain is not listed; else whether the certificate (dnKey when not null, else cn) is bound to it. */
  domainBinding(domain: string, dnKey: string | null, cn: string | null): boolean | null;
}

export interface DecisionPolicy {
  readonly tlsProfile: TlsProfileName;
  /** Normalised issuer CNs accepted for the client certificate; empty: no issuer check. */
  readonly trustedIssuerCns: ReadonlySet<string>;
}

const DEFAULT_POLICY: DecisionPolicy = Object.freeze({ tlsProfile: 'off', trustedIssuerCns: new Set<string>() });

export interface Decision {
  readonly reason: Reason;
  /** The sender domain as compared (A-label), when one was looked up: for the trace. */
  readonly senderDomain: string | null;
  /**
   * The listed certificate identity the decision matched — the normalised CN (the MTA gave a CN) or
   * the DN key (it gave a full DN) — once the certificate was found listed; else null. For accounting.
   */
  readonly operator?: string | null;
}

const decisions = {
  notDecided: { reason: REASONS.not_decided_at_this_stage, senderDomain: null, operator: null },
  unavailable: { reason: REASONS.whitelist_unavailable, senderDomain: null, operator: null },
  tlsRequired: { reason: REASONS.tls_required, senderDomain: null, operator: null },
  tlsProfile: { reason: REASONS.tls_profile, senderDomain: null, operator: null },
  certMissing: { reason: REASONS.cert_missing, senderDomain: null, operator: null },
  issuer: { reason: REASONS.cert_issuer_not_trusted, senderDomain: null, operator: null },
  certNotListed: { reason: REASONS.cert_not_listed, senderDomain: null, operator: null },
  subjectUnusable: { reason: REASONS.cert_subject_unusable, senderDomain: null, operator: null },
} as const satisfies Record<string, Decision>;

export function decide(facts: Facts, index: ListedIdentities | null, policy: DecisionPolicy = DEFAULT_POLICY): Decision {
  // Fail closed: every stage where sender and certificate are known is decided, DATA and END-OF-MESSAGE too.
  if (facts.stage !== 'mail' && facts.stage !== 'rcpt' && facts.stage !== 'data') return decisions.notDecided;
  if (index === null) return decisions.unavailable;
  if (facts.tlsProtocol === null || facts.tlsProtocol === '') return decisions.tlsRequired;
  if (!tlsProfileAllows(policy.tlsProfile, facts.tlsProtocol, facts.tlsCipher)) return decisions.tlsProfile;

  const cert = facts.cert;
  if (cert === null || !cert.verified) return decisions.certMissing;
  if (policy.trustedIssuerCns.size > 0 && (cert.issuerCn === null || !policy.trustedIssuerCns.has(normaliseCn(cert.issuerCn)))) {
    return decisions.issuer;
  }

  // The certificate's identity: a full-DN key when the MTA gave the DN, else the CN (Postfix).
  let dnKey: string | null = null;
  let cn: string | null = null;
  if (cert.kind === 'dn') {
    const parsed = parseDnCached(cert.dn);
    // No CN (or no parsable DN at all): nothing to compare with the list, most often a subject the
    // MTA truncated; said apart from cert_not_listed so that the operator looks at the MTA.
    if (!parsed.ok || parsed.dn.cn === null) return decisions.subjectUnusable;
    if (!index.isDnListed(parsed.dn.key)) return decisions.certNotListed;
    dnKey = parsed.dn.key;
  } else {
    cn = normaliseCn(cert.cn);
    if (cn === '') return decisions.subjectUnusable;
    if (!index.isCnListed(cn)) return decisions.certNotListed;
  }

  const operator = dnKey ?? cn;
  if (facts.sender === null) return { reason: REASONS.sender_missing, senderDomain: null, operator };
  if (facts.sender === '') return { reason: REASONS.ok_bounce, senderDomain: null, operator };
  const at = facts.sender.lastIndexOf('@');
  if (at <= 0) return { reason: REASONS.sender_invalid, senderDomain: null, operator };
  // A listed domain is already normalised (normaliseDomain leaves it as it is): the common case,
  // a sender of a listed domain as MTAs write it, skips normalising — and takes one lookup.
  const given = facts.sender.slice(at + 1);
  let domain: string | null = given;
  let bound = index.domainBinding(given, dnKey, cn);
  if (bound === null) {
    domain = normaliseDomain(given);
    if (domain === null) return { reason: REASONS.sender_invalid, senderDomain: null, operator };
    if (domain !== given) bound = index.domainBinding(domain, dnKey, cn);
    if (bound === null) return { reason: REASONS.sender_domain_not_listed, senderDomain: domain, operator };
  }
  return { reason: bound ? REASONS.ok : REASONS.sender_cert_mismatch, senderDomain: domain, operator };
}
