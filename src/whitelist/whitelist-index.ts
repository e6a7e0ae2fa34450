/**
 * The list in force as prebuilt maps: domain → certificates, certificate → domains, CN → certificates.
 * Immutable once built; the life cycle replaces it whole, so an answer never sees half a list.
 */
import type { RejectedEntry, ValidEntry } from './validate.js';

const EMPTY: ReadonlySet<string> = new Set();

export interface IndexMetadata {
  /** DateDeGeneration, ISO 8601. */
  readonly generatedAt: string;
  /** sha256 of the signed bytes the index was built from; traces and the change journal name the list by it. */
  readonly sha256?: string | null;
}

export class WhitelistIndex {
  readonly generatedAt: string;
  readonly generatedAtMs: number;
  readonly sha256: string | null;
  readonly entries: readonly ValidEntry[];
  readonly rejected: readonly RejectedEntry[];
  /**
   * domain → its entry, or its entries when there are several (a few domains served by two
   * certificates, spelling variants of one DN). One map, no Set per domain: with 50 000 domains the
   * per-domain Sets were most of the index's memory; a domain's entries are one or two, scanned.
   */
  private readonly byDomain = new Map<string, ValidEntry | ValidEntry[]>();
  private readonly domainsByDnKey = new Map<string, Set<string>>();
  private readonly dnKeysByCn = new Map<string, Set<string>>();

  constructor(metadata: IndexMetadata, entries: readonly ValidEntry[], rejected: readonly RejectedEntry[]) {
    this.generatedAt = metadata.generatedAt;
    this.generatedAtMs = Date.parse(metadata.generatedAt);
    this.sha256 = metadata.sha256 ?? null;
    this.entries = Object.isFrozen(entries) ? entries : Object.freeze([...entries]);
    this.rejected = Object.isFrozen(rejected) ? rejected : Object.freeze([...rejected]);
    const byDomain = this.byDomain;
    for (const e of entries) {
      const there = byDomain.get(e.domain);
      if (there === undefined) byDomain.set(e.domain, e);
      else if (Array.isArray(there)) there.push(e);
      else byDomain.set(e.domain, [there, e]);
      add(this.domainsByDnKey, e.dnKey, e.domain);
      add(this.dnKeysByCn, e.cn, e.dnKey);
    }
    Object.freeze(this);
  }

  get domainCount(): number {
    return this.byDomain.size;
  }

  get certificateCount(): number {
    return this.domainsByDnKey.size;
  }

  hasDomain(domain: string): boolean {
    return this.byDomain.has(domain);
  }

  /** Is a certificate with this full-DN key listed for any domain? */
  isDnListed(dnKey: string): boolean {
    return this.domainsByDnKey.has(dnKey);
  }

  /** Is any listed certificate's CN equal to this normalised CN? */
  isCnListed(cn: string): boolean {
    return this.dnKeysByCn.has(cn);
  }

  domainHasDn(domain: string, dnKey: string): boolean {
    const there = this.byDomain.get(domain);
    if (there === undefined) return false;
    if (!Array.isArray(there)) return there.dnKey === dnKey;
    for (const e of there) if (e.dnKey === dnKey) return true;
    return false;
  }

  domainHasCn(domain: string, cn: string): boolean {
    const there = this.byDomain.get(domain);
    if (there === undefined) return false;
    if (!Array.isArray(there)) return there.cn === cn;
    for (const e of there) if (e.cn === cn) return true;
    return false;
  }

  /**
   * decide()'s one look at a sender domain: null when the domain is not listed, else whether the
   * certificate — its DN key when the MTA gave a DN, else its normalised CN — is bound to it.
   */
  domainBinding(domain: string, dnKey: string | null, cn: string | null): boolean | null {
    const there = this.byDomain.get(domain);
    if (there === undefined) return null;
    if (!Array.isArray(there)) return dnKey !== null ? there.dnKey === dnKey : there.cn === cn;
    for (const e of there) if (dnKey !== null ? e.dnKey === dnKey : e.cn === cn) return true;
    return false;
  }

  /** The normalised certificate identities (DN keys) bound to the domain: spelling variants are one key. */
  dnKeysForDomain(domain: string): ReadonlySet<string> {
    const there = this.byDomain.get(domain);
    if (there === undefined) return EMPTY;
    return new Set(Array.isArray(there) ? there.map((e) => e.dnKey) : [there.dnKey]);
  }

  entriesForDomain(domain: string): readonly ValidEntry[] {
    const there = this.byDomain.get(domain);
    if (there === undefined) return [];
    return Array.isArray(there) ? there : [there];
  }

  domainsForDn(dnKey: string): ReadonlySet<string> {
    return this.domainsByDnKey.get(dnKey) ?? EMPTY;
  }

  domains(): IterableIterator<string> {
    return this.byDomain.keys();
  }
}

function add<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}
