/**
 * What an MTA told us about one SMTP transaction, normalised. Frontends build Facts; decide()
 * reads them. Nothing here is trusted more than the MTA that sent it.
 */
import type { Frontend } from '../observe/metrics.js';

/** The SMTP stage the question is asked at. Only `mail` and `rcpt` are decided. */
export type Stage = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data' | 'other';

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
}
