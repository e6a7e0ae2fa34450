/**
 * The socketmap tables of the sending side: pure lookups in the list in force. They never decide
 * trust; they only say whether a domain is listed, exactly (no implied subdomain, like the inbound
 * side), with keys normalised the same way (case, trailing dot, IDN A-label/U-label).
 *
 * Postfix asks a table several keys for one lookup, and stops at the first one found:
 * - transport_maps: `user+ext@domain`, `user@domain`, `domain`, `.parent` ..., `*`;
 * - smtp_tls_policy_maps: `domain` (the next-hop), `.parent` ...;
 * - check_recipient_access: `user+ext@domain`, `user@domain`, `domain`, its parents (`parent`, or
 *   `.parent` when parent_domain_matches_subdomains lacks smtpd_access_maps), then `user@`.
 * A `.parent` key is a parent-domain lookup: never answered, since no listed domain implies another.
 *
 * mssante-recipient-access decides on the first key Postfix sends, the full address: REJECT unless
 * its domain is exactly listed. Every later key is only asked when that one passed, so they must not
 * reject a listed recipient: `user@` and a bare domain that is listed or a parent of a listed domain
 * answer NOTFOUND (a parent key never grants a pass: the pass came from the full address). A bare
 * domain that is neither (only a direct query sends one) is refused like an unlisted recipient.
 */
import { domainToASCII } from 'node:url';
import { RECIPIENT_DOMAIN_NOT_LISTED, REASONS } from '../../trust/reasons.js';
import type { WhitelistIndex } from '../../whitelist/whitelist-index.js';
import { normaliseDomain } from '../../trust/domain.js';
import type { SocketmapMapLabel, SocketmapResultLabel } from '../../observe/metrics.js';
import type { SocketmapReply } from './codec.js';

export const SOCKETMAP_MAPS = ['mssante-domain', 'mssante-tls-policy', 'mssante-transport', 'mssante-recipient-access'] as const;
export type SocketmapMap = (typeof SOCKETMAP_MAPS)[number];
// Metric label of a lookup: a map name, or `unknown` for any other (bounded, never the client's text).
export type { SocketmapMapLabel, SocketmapResultLabel } from '../../observe/metrics.js';

export interface SocketmapValues {
  /** OK value of mssante-tls-policy (a Postfix TLS policy: level and attributes). */
  readonly tlsPolicy: string;
  /** OK value of mssante-transport (a Postfix transport: `transport:nexthop`). */
  readonly transport: string;
}

export interface SocketmapLookup {
  readonly map: SocketmapMapLabel;
  readonly result: SocketmapResultLabel;
  readonly reply: SocketmapReply;
}

const MAP_SET: ReadonlySet<string> = new Set(SOCKETMAP_MAPS);

/** `REJECT 5.7.1 <fr> / <en>`: Postfix's smtpd answers it with access_map_reject_code (554). */
export const RECIPIENT_REJECT_VALUE = `REJECT ${RECIPIENT_DOMAIN_NOT_LISTED.enhancedCode} ${RECIPIENT_DOMAIN_NOT_LISTED.fr} / ${RECIPIENT_DOMAIN_NOT_LISTED.en}`;

const NO_LIST_TEXT = `${REASONS.whitelist_unavailable.enhancedCode} ${REASONS.whitelist_unavailable.fr} / ${REASONS.whitelist_unavailable.en}`;

/** Answers built once; replies are immutable and may be shared. */
export class SocketmapTables {
  readonly #values: SocketmapValues;
  readonly #notFound: Record<SocketmapMap, SocketmapLookup>;
  readonly #temp: Record<SocketmapMap, SocketmapLookup>;
  readonly #tls: SocketmapLookup;
  readonly #transport: SocketmapLookup;
  readonly #reject: SocketmapLookup;
  readonly #unknown: SocketmapLookup = freeze('unknown', 'perm', {
    status: 'PERM',
    text: `unknown map name (maps: ${SOCKETMAP_MAPS.join(', ')})`,
  });
  /** CN answers and parent-domain sets, per list: dropped with the list. */
  readonly #perIndex = new WeakMap<WhitelistIndex, { cns: Map<string, SocketmapLookup>; parents: Set<string> | null }>();

  constructor(values: SocketmapValues) {
    for (const [what, value] of [
      ['tls policy', values.tlsPolicy],
      ['transport', values.transport],
    ] as const) {
      // eslint-disable-next-line no-control-regex -- refusing control characters is the point
      if (value.trim() === '' || /[\x00-\x1f\x7f]/.test(value))
        throw new RangeError(`socketmap ${what} value must be non-empty text without control characters`);
    }
    this.#values = values;
    const each = (make: (m: SocketmapMap) => SocketmapLookup): Record<SocketmapMap, SocketmapLookup> =>
      Object.fromEntries(SOCKETMAP_MAPS.map((m) => [m, make(m)])) as Record<SocketmapMap, SocketmapLookup>;
    this.#notFound = each((m) => freeze(m, 'notfound', { status: 'NOTFOUND', text: '' }));
    this.#temp = each((m) => freeze(m, 'temp', { status: 'TEMP', text: NO_LIST_TEXT }));
    this.#tls = freeze('mssante-tls-policy', 'ok', { status: 'OK', text: values.tlsPolicy });
    this.#transport = freeze('mssante-transport', 'ok', { status: 'OK', text: values.transport });
    this.#reject = freeze('mssante-recipient-access', 'ok', { status: 'OK', text: RECIPIENT_REJECT_VALUE });
  }

  get values(): SocketmapValues {
    return this.#values;
  }

  /** The answer to `name key` with `index` in force (null: no usable list, TEMP so Postfix defers). */
  lookup(name: string, key: string, index: WhitelistIndex | null): SocketmapLookup {
    if (!MAP_SET.has(name)) return this.#unknown;
    const map = name as SocketmapMap;
    if (index === null) return this.#temp[map];
    const form = classify(key);
    if (map === 'mssante-recipient-access') return this.#recipient(form, index);
    // The three domain tables: a full address is looked up by its domain (transport_maps asks it first).
    const domain = form.kind === 'address' || form.kind === 'domain' ? form.domain : null;
    if (domain === null || !index.hasDomain(domain)) return this.#notFound[map];
    if (map === 'mssante-tls-policy') return this.#tls;
    if (map === 'mssante-transport') return this.#transport;
    return this.#cns(index, domain);
  }

  #recipient(form: KeyForm, index: WhitelistIndex): SocketmapLookup {
    switch (form.kind) {
      case 'address':
        return form.domain !== null && index.hasDomain(form.domain) ? this.#notFound['mssante-recipient-access'] : this.#reject;
      case 'localpart':
        return this.#notFound['mssante-recipient-access'];
      case 'domain':
      case 'parent':
        return form.domain !== null && (index.hasDomain(form.domain) || this.#parents(index).has(form.domain))
          ? this.#notFound['mssante-recipient-access']
          : this.#reject;
      case 'other':
        return this.#reject;
    }
  }

  #entry(index: WhitelistIndex): { cns: Map<string, SocketmapLookup>; parents: Set<string> | null } {
    let entry = this.#perIndex.get(index);
    if (entry === undefined) {
      entry = { cns: new Map(), parents: null };
      this.#perIndex.set(index, entry);
    }
    return entry;
  }

  #cns(index: WhitelistIndex, domain: string): SocketmapLookup {
    const { cns } = this.#entry(index);
    let answer = cns.get(domain);
    if (answer === undefined) {
      answer = freeze('mssante-domain', 'ok', { status: 'OK', text: domainCns(index, domain).join(',') });
      cns.set(domain, answer);
    }
    return answer;
  }

  #parents(index: WhitelistIndex): Set<string> {
    const entry = this.#entry(index);
    entry.parents ??= parentDomains(index.domains());
    return entry.parents;
  }
}

/** The distinct certificate CNs listed for a domain, sorted: the value of mssante-domain. */
export function domainCns(index: WhitelistIndex, domain: string): string[] {
  return [...new Set(index.entriesForDomain(domain).map((e) => e.cn))].sort();
}

/** Every proper parent of the given domains, down to the top-level label (Postfix asks `fr` too). */
export function parentDomains(domains: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const d of domains) {
    let at = d.indexOf('.');
    while (at !== -1) {
      const parent = d.slice(at + 1);
      if (out.has(parent)) break;
      out.add(parent);
      at = d.indexOf('.', at + 1);
    }
  }
  return out;
}

type KeyForm =
  | { readonly kind: 'address'; readonly domain: string | null }
  | { readonly kind: 'localpart' }
  | { readonly kind: 'domain'; readonly domain: string | null }
  | { readonly kind: 'parent'; readonly domain: string | null }
  | { readonly kind: 'other' };

const LOCALPART: KeyForm = Object.freeze({ kind: 'localpart' });
const OTHER: KeyForm = Object.freeze({ kind: 'other' });

/** Which of Postfix's key forms `key` is; domains normalised (null when not a valid domain name). */
function classify(key: string): KeyForm {
  const at = key.lastIndexOf('@');
  if (at !== -1) return at === key.length - 1 ? LOCALPART : { kind: 'address', domain: normaliseDomain(key.slice(at + 1)) };
  if (key.startsWith('.')) return { kind: 'parent', domain: normaliseName(key.slice(1)) };
  const domain = normaliseName(key);
  return domain === null ? OTHER : { kind: 'domain', domain };
}

/** normaliseDomain, plus single labels (a top-level parent such as `fr`), which it refuses. */
function normaliseName(name: string): string | null {
  const domain = normaliseDomain(name);
  if (domain !== null) return domain;
  const bare = name.trim().replace(/\.$/, '');
  if (bare.includes('.')) return null;
  const label = domainToASCII(bare);
  return /^[a-z0-9-]{1,63}$/.test(label) ? label : null;
}

function freeze(map: SocketmapMapLabel, result: SocketmapResultLabel, reply: SocketmapReply): SocketmapLookup {
  return Object.freeze({ map, result, reply: Object.freeze(reply) });
}
