/**
 * Mail domains: the one normalisation shared by the list pipeline (entries), the decision
 * (MAIL FROM) and the lookups (socketmap keys, HTTP). Lives beside the DN code as the other half of
 * an operator's identity; pure.
 */
import { domainToASCII } from 'node:url';

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * A mail domain as the list and MAIL FROM name it → lower-case A-label, or null when it is not a
 * syntactically valid host name (no IP literal, at least two labels, LDH labels).
 */
export function normaliseDomain(name: string): string | null {
  let n = name.trim();
  if (n.endsWith('.')) n = n.slice(0, -1);
  if (n.length === 0 || n.length > 253) return null;
  // Pure ASCII names skip the IDNA machinery: the common case on the hot path.
  // eslint-disable-next-line no-control-regex
  const ascii = /^[\x00-\x7f]*$/.test(n) ? n.toLowerCase() : domainToASCII(n);
  if (ascii.length === 0 || ascii.length > 253) return null;
  const labels = ascii.split('.');
  if (labels.length < 2) return null;
  for (const label of labels) {
    if (!LABEL.test(label)) return null;
  }
  if (/^\d+$/.test(labels[labels.length - 1] ?? '')) return null;
  return ascii;
}
