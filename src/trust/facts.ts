/**
 * What an MTA told us about one SMTP transaction, normalised. Frontends build Facts; decide()
 * reads them. Nothing here is trusted more than the MTA that sent it.
 */
import type { CertFingerprints } from './fingerprint.js';

/** The frontends that ask for decisions (a label of decisions_total and trace lines). */
export type Frontend = 'policy' | 'milter';
/** Frontends that hold connections: the deciding ones, and the sending side's table lookups. */
export type ListenerFrontend = Frontend | 'socketmap';

/**
 * The SMTP stage the question is asked at. `mail`, `rcpt` and `data` (DATA and END-OF-MESSAGE:
 * sender and certificate are known there) are decided; the others cannot be and answer DUNNO.
 */
export type Stage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data' | 'vrfy' | 'etrn' | 'other';

/** Stages a check can be misplaced at (never decided): the bounded label set of misplaced_checks_total. */
export const UNDECIDED_STAGES = ['connect', 'helo', 'vrfy', 'etrn', 'other'] as const satisfies readonly Stage[];
export type UndecidedStage = (typeof UNDECIDED_STAGES)[number];

/**
 * The client certificate as the MTA describes it.
 * - `cn`: the MTA gives only the subject CN, and only for a chain-verified certificate (Postfix).
 * - `dn`: the MTA gives the full subject DN (Exim, Sendmail); `verified` says whether it checked the chain.
 */
export type CertIdentity =
  | { readonly kind: 'cn'; readonly cn: string; readonly issuerCn: string | null; readonly verified: true }
  | { readonly kind: 'dn'; readonly dn: string; readonly issuerCn: string | null; readonly verified: boolean };

export interface Facts {
  readonly frontend: Frontend;
  readonly stage: Stage;
  /** TLS protocol as the MTA names it (`TLSv1.2`, `TLS1.3`, ...); null when the session is not encrypted. */
  readonly tlsProtocol: string | null;
  readonly tlsCipher: string | null;
  /** null when the MTA reports no (verified) certificate. */
  readonly cert: CertIdentity | null;
  /** MAIL FROM address without angle brackets; '' for the null sender; null if the MTA did not say. */
  readonly sender: string | null;
  /**
   * The certificate's digests as the MTA gave them (null or absent: none given). Never read by
   * decide(): only the peer ledger (trust/peers.ts) records them, to notice a listed identity's new certificate.
   */
  readonly certFingerprints?: CertFingerprints | null;
}
