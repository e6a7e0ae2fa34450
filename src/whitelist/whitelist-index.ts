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
  private readonly entriesByDomain = new Map<string, ValidEntry[]>();
  private readonly dnKeysByDomain = new Map<string, Set<string>>();
  private readonly cnsByDomain = new Map<string, Set<string>>();
  private readonly domainsByDnKey = new Map<string, Set<string>>();
  private readonly dnKeysByCn = new Map<string, Set<string>>();

  constructor(metadata: IndexMetadata, entries: readonly ValidEntry[], rejected: readonly RejectedEntry[]) {
    this.generatedAt = metadata.generatedAt;
    this.generatedAtMs = Date.parse(metadata.generatedAt);
    this.sha256 = metadata.sha256 ?? null;
    this.entries = Object.freeze([...entries]);
    this.rejected = Object.freeze([...rejected]);
    for (const e of entries) {
      push(this.entriesByDomain, e.domain, e);
      add(this.dnKeysByDomain, e.domain, e.dnKey);
      add(this.cnsByDomain, e.domain, e.cn);
      add(this.domainsByDnKey, e.dnKey, e.domain);
      add(this.dnKeysByCn, e.cn, e.dnKey);
    }
    Object.freeze(this);
  }

  get domainCount(): number {
    return this.entriesByDomain.size;
  }

  get certificateCount(): number {
    return this.domainsByDnKey.size;
  }

  hasDomain(domain: string): boolean {
    return this.entriesByDomain.has(domain);
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
    return (this.dnKeysByDomain.get(domain) ?? EMPTY).has(dnKey);
  }

  domainHasCn(domain: string, cn: string): boolean {
    return (this.cnsByDomain.get(domain) ?? EMPTY).has(cn);
  }

  /** The normalised certificate identities (DN keys) bound to the domain: spelling variants are one key. */
  dnKeysForDomain(domain: string): ReadonlySet<string> {
    return this.dnKeysByDomain.get(domain) ?? EMPTY;
  }

  entriesForDomain(domain: string): readonly ValidEntry[] {
    return this.entriesByDomain.get(domain) ?? [];
  }

  domainsForDn(dnKey: string): ReadonlySet<string> {
    return this.domainsByDnKey.get(dnKey) ?? EMPTY;
  }

  domains(): IterableIterator<string> {
    return this.entriesByDomain.keys();
  }
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

function add<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}
