/**
 * Every reason a decision or a list load can give, in one place. Logs, metric labels and SMTP
 * answers carry the id; the text lives only here. SMTP replies are ASCII, French then English.
 */

export type Result = 'pass' | 'reject' | 'tempfail';

export interface Reason {
  readonly id: ReasonId;
  readonly result: Result;
  /** Basic SMTP code: 250-class for pass, 550 for refusals, 451 for deferrals. */
  readonly smtpCode: string;
  /** RFC 3463 enhanced status code. */
  readonly enhancedCode: string;
  readonly fr: string;
  readonly en: string;
}

export type ReasonId =
  | 'ok'
  | 'ok_bounce'
  | 'not_decided_at_this_stage'
  | 'tls_required'
  | 'tls_profile'
  | 'cert_missing'
  | 'cert_issuer_not_trusted'
  | 'cert_not_listed'
  | 'cert_subject_unusable'
  | 'sender_missing'
  | 'sender_invalid'
  | 'sender_domain_not_listed'
  | 'sender_cert_mismatch'
  | 'whitelist_unavailable'
  | 'internal_error'
  | 'operator_rate_limited';

function reason(id: ReasonId, result: Result, smtpCode: string, enhancedCode: string, fr: string, en: string): Reason {
  return Object.freeze({ id, result, smtpCode, enhancedCode, fr, en });
}

export const REASONS: Readonly<Record<ReasonId, Reason>> = Object.freeze({
  ok: reason('ok', 'pass', '250', '2.0.0', 'Conforme a la liste blanche MSSante', 'allowed by the MSSante whitelist'),
  ok_bounce: reason(
    'ok_bounce',
    'pass',
    '250',
    '2.0.0',
    'Notification sans expediteur d un serveur liste',
    'null sender from a listed server',
  ),
  not_decided_at_this_stage: reason(
    'not_decided_at_this_stage',
    'pass',
    '250',
    '2.0.0',
    'Pas de decision a cette etape',
    'no decision at this SMTP stage',
  ),
  tls_required: reason(
    'tls_required',
    'reject',
    '550',
    '5.7.1',
    'Session TLS obligatoire dans l espace de confiance MSSante',
    'TLS is required in the MSSante trust space',
  ),
  tls_profile: reason(
    'tls_profile',
    'reject',
    '550',
    '5.7.1',
    'Version ou suite TLS non conforme au referentiel MSSante',
    'TLS version or cipher not allowed by the MSSante profile',
  ),
  cert_missing: reason(
    'cert_missing',
    'reject',
    '550',
    '5.7.1',
    'Certificat client verifie absent',
    'no verified client certificate',
  ),
  cert_issuer_not_trusted: reason(
    'cert_issuer_not_trusted',
    'reject',
    '550',
    '5.7.1',
    'Certificat client emis par une autorite non reconnue',
    'client certificate issuer not trusted',
  ),
  cert_not_listed: reason(
    'cert_not_listed',
    'reject',
    '550',
    '5.7.1',
    'Certificat du serveur emetteur absent de la liste blanche MSSante',
    'sending server certificate not in the MSSante whitelist',
  ),
  // A subject with no CN cannot be compared with the list: Sendmail truncates {cert_subject} around
  // 256 bytes (certificate order puts the CN last), so a listed operator with a long DN arrives so.
  cert_subject_unusable: reason(
    'cert_subject_unusable',
    'reject',
    '550',
    '5.7.1',
    'Sujet du certificat client inexploitable (sans CN, probablement tronque par le MTA)',
    'client certificate subject unusable (no CN, probably truncated by the MTA)',
  ),
  sender_missing: reason('sender_missing', 'reject', '550', '5.7.1', 'Expediteur (MAIL FROM) absent', 'MAIL FROM is missing'),
  sender_invalid: reason('sender_invalid', 'reject', '550', '5.7.1', 'Adresse expediteur invalide', 'invalid sender address'),
  sender_domain_not_listed: reason(
    'sender_domain_not_listed',
    'reject',
    '550',
    '5.7.1',
    'Domaine expediteur absent de la liste blanche MSSante',
    'sender domain not in the MSSante whitelist',
  ),
  sender_cert_mismatch: reason(
    'sender_cert_mismatch',
    'reject',
    '550',
    '5.7.1',
    'Domaine expediteur non rattache au certificat presente',
    'sender domain not bound to the presented certificate',
  ),
  whitelist_unavailable: reason(
    'whitelist_unavailable',
    'tempfail',
    '451',
    '4.3.0',
    'Liste blanche MSSante indisponible, reessayez plus tard',
    'MSSante whitelist unavailable, try again later',
  ),
  internal_error: reason(
    'internal_error',
    'tempfail',
    '451',
    '4.3.0',
    'Erreur interne temporaire, reessayez plus tard',
    'temporary internal error, try again later',
  ),
  operator_rate_limited: reason(
    'operator_rate_limited',
    'tempfail',
    '451',
    '4.7.1',
    'Debit de l operateur emetteur temporairement limite',
    'sending operator temporarily rate limited',
  ),
});

export const REASON_IDS = Object.keys(REASONS) as ReasonId[];

/** "5.7.1 <fr> / <en>" — the text after the basic code, as Postfix and Milter replies carry it. */
export function replyText(r: Reason): string {
  return `${r.enhancedCode} ${r.fr} / ${r.en}`;
}

/** Postfix policy `action=` value for a reason: DUNNO when the checks pass. */
export function policyAction(r: Reason): string {
  return r.result === 'pass' ? 'DUNNO' : `${r.smtpCode} ${replyText(r)}`;
}

/** Precomputed so that the hot path allocates nothing per answer. */
export const POLICY_ACTIONS: Readonly<Record<ReasonId, string>> = Object.freeze(
  Object.fromEntries(REASON_IDS.map((id) => [id, policyAction(REASONS[id])])) as Record<ReasonId, string>,
);

/**
 * The sending side's refusal (socketmap `mssante-recipient-access`): not a decide() outcome, so it stays
 * out of REASON_IDS and decisions_total; the relay's smtpd answers it as `554 5.7.1 <fr> / <en>`.
 */
export const RECIPIENT_DOMAIN_NOT_LISTED = Object.freeze({
  id: 'recipient_domain_not_listed',
  enhancedCode: '5.7.1',
  fr: 'Domaine destinataire hors espace de confiance MSSante',
  en: 'recipient domain outside the MSSante trust space',
} as const);
