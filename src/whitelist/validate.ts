/**
 * Raw entry → valid entry, or a rejection with a reason. One bad entry never spoils the list
 * (incident of 2020-10-07: three entries with "_" in every field).
 */
import { domainToUnicode } from 'node:url';
import { formatDn, parseDnCached, type Dn } from '../trust/dn.js';
import { normaliseDomain } from '../trust/domain.js';
import type { RawEntry } from './xml.js';

export type EntryRejection = 'field_empty' | 'field_placeholder' | 'domain_invalid' | 'dn_invalid' | 'dn_without_cn';

/** A usable entry; plain data so that it crosses a worker boundary unchanged. */
export interface ValidEntry {
  readonly index: number;
  /** Lower-case A-label: what lookups compare. */
  readonly domain: string;
  /** U-label, for reports. */
  readonly domainUnicode: string;
  readonly dnRaw: string;
  readonly dnKey: string;
  readonly dnDisplay: string;
  readonly cn: string;
  readonly description: string;
  readonly updatedAt: string | null;
}

export interface RejectedEntry {
  readonly index: number;
  readonly domain: string | null;
  readonly reason: EntryRejection;
  readonly detail: string;
}

export type EntryResult =
  { readonly ok: true; readonly entry: ValidEntry } | { readonly ok: false; readonly rejected: RejectedEntry };

const PLACEHOLDER = /^[_\-.?*\s]+$/;

/**
 * parseDnCached() hands back the same Dn for the same text, and a list writes ~400 DNs for ~6 500
 * entries: their display form is built once (it was a third of validation, issue #25).
 */
const displayOf = new WeakMap<Dn, string>();
function displayDn(dn: Dn): string {
  let display = displayOf.get(dn);
  if (display === undefined) {
    display = formatDn(dn);
    displayOf.set(dn, display);
  }
  return display;
}
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

function reject(raw: RawEntry, reason: EntryRejection, detail: string, domain: string | null = null): EntryResult {
  return {
    ok: false,
    rejected: { index: raw.index, domain: domain ?? (raw.nom.length > 0 ? raw.nom.slice(0, 255) : null), reason, detail },
  };
}

export function validateEntry(raw: RawEntry): EntryResult {
  if (raw.nom.length === 0) return reject(raw, 'field_empty', 'Nom is empty');
  if (PLACEHOLDER.test(raw.nom)) return reject(raw, 'field_placeholder', `Nom is a placeholder (${JSON.stringify(raw.nom)})`);
  if (raw.dn.length === 0) return reject(raw, 'field_empty', 'DNCertificatOperateur is empty');
  if (PLACEHOLDER.test(raw.dn))
    return reject(raw, 'field_placeholder', `DNCertificatOperateur is a placeholder (${JSON.stringify(raw.dn)})`);
  const domain = normaliseDomain(raw.nom);
  if (domain === null)
    return reject(raw, 'domain_invalid', `Nom is not a valid domain name (${JSON.stringify(raw.nom.slice(0, 255))})`);
  const parsed = parseDnCached(raw.dn);
  if (!parsed.ok) return reject(raw, 'dn_invalid', `DNCertificatOperateur: ${parsed.error}`, domain);
  if (parsed.dn.cn === null) return reject(raw, 'dn_without_cn', 'DNCertificatOperateur has no CN', domain);
  return {
    ok: true,
    entry: {
      index: raw.index,
      domain,
      domainUnicode: domainToUnicode(domain) || domain,
      dnRaw: raw.dn,
      dnKey: parsed.dn.key,
      dnDisplay: displayDn(parsed.dn),
      cn: parsed.dn.cn,
      description: raw.description,
      updatedAt: ISO_UTC.test(raw.dateMaj) ? raw.dateMaj : null,
    },
  };
}

export interface ValidatedEntries {
  readonly entries: ValidEntry[];
  readonly rejected: RejectedEntry[];
}

/**
 * Validates every entry. The same (domain, certificate) written twice — spelling variants of one DN —
 * is kept: the index's sets collapse it, and reports show both spellings.
 */
export function validateEntries(raws: readonly RawEntry[]): ValidatedEntries {
  const entries: ValidEntry[] = [];
  const rejected: RejectedEntry[] = [];
  for (const raw of raws) {
    const result = validateEntry(raw);
    if (result.ok) entries.push(result.entry);
    else rejected.push(result.rejected);
  }
  return { entries, rejected };
}
