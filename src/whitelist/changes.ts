/**
 * What changed between two lists: a pure function of two indexes. The guard judges it (shrink,
 * rebind), the change journal keeps it, HTTP and `diff` print it. Certificates are compared by their
 * normalised identity (the DN key of trust/dn.ts), so a DN spelled another way is not a move.
 */
import type { WhitelistIndex } from './whitelist-index.js';

/** A list, named as the journal and the traces name it. */
export interface ListRef {
  readonly sha256: string;
  readonly generatedAt: string;
}

/** A domain whose set of certificate identities changed; DNs in their normalised display form, sorted. */
export interface Rebinding {
  readonly domain: string;
  readonly from: readonly string[];
  readonly to: readonly string[];
}

export interface ListDiff {
  /** Domains (A-labels) in the new list only, sorted. */
  readonly added: readonly string[];
  /** Domains in the old list only, sorted. */
  readonly removed: readonly string[];
  /** Domains in both whose certificate identities differ, sorted by domain. */
  readonly rebound: readonly Rebinding[];
  /** Certificate identities (normalised DN) bound to some domain in the new list only, sorted. */
  readonly operatorsAdded: readonly string[];
  readonly operatorsRemoved: readonly string[];
}

/** One swap, as the journal keeps it and GET /v1/whitelist/changes serves it. */
export interface ListChange extends ListDiff {
  readonly from: ListRef;
  readonly to: ListRef;
  /** When the daemon put `to` in force; null for `diff` (nothing applied). */
  readonly appliedAt: string | null;
}

export type ChangeKind = 'added' | 'removed' | 'rebound';
export const CHANGE_KINDS: readonly ChangeKind[] = Object.freeze(['added', 'removed', 'rebound'] as const);

export function diffIndexes(before: WhitelistIndex, after: WhitelistIndex): ListDiff {
  const added: string[] = [];
  const removed: string[] = [];
  const rebound: Rebinding[] = [];
  for (const domain of before.domains()) {
    if (!after.hasDomain(domain)) {
      removed.push(domain);
      continue;
    }
    // Most domains have one entry on each side: compared without building their key sets.
    const was = before.entriesForDomain(domain);
    const now = after.entriesForDomain(domain);
    const same =
      was.length === 1 && now.length === 1
        ? was[0]!.dnKey === now[0]!.dnKey
        : sameKeys(before.dnKeysForDomain(domain), after.dnKeysForDomain(domain));
    if (!same) rebound.push({ domain, from: displaysOf(before, domain), to: displaysOf(after, domain) });
  }
  for (const domain of after.domains()) if (!before.hasDomain(domain)) added.push(domain);
  rebound.sort((a, b) => compare(a.domain, b.domain));
  return {
    added: added.sort(compare),
    removed: removed.sort(compare),
    rebound,
    operatorsAdded: identitiesOnlyIn(after, before),
    operatorsRemoved: identitiesOnlyIn(before, after),
  };
}

/** The change from the list in force to the next; both indexes must name their list (sha256). */
export function listChange(before: WhitelistIndex, after: WhitelistIndex, appliedAt: string | null): ListChange {
  return { from: refOf(before), to: refOf(after), appliedAt, ...diffIndexes(before, after) };
}

export function refOf(index: WhitelistIndex): ListRef {
  if (index.sha256 === null) throw new Error('refOf: the index was built without the sha256 of its list');
  return { sha256: index.sha256, generatedAt: index.generatedAt };
}

export function changeCounts(diff: ListDiff): Readonly<Record<ChangeKind, number>> {
  return { added: diff.added.length, removed: diff.removed.length, rebound: diff.rebound.length };
}

/** Share of the old list's domains that `diff` drops or moves, in percent (0 for an empty old list). */
export function percentOf(count: number, before: WhitelistIndex): number {
  return before.domainCount === 0 ? 0 : (count * 100) / before.domainCount;
}

function sameKeys(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const key of a) if (!b.has(key)) return false;
  return true;
}

/** One display per distinct identity bound to the domain (the first entry's spelling normalised). */
function displaysOf(index: WhitelistIndex, domain: string): string[] {
  const byKey = new Map<string, string>();
  for (const e of index.entriesForDomain(domain)) if (!byKey.has(e.dnKey)) byKey.set(e.dnKey, e.dnDisplay);
  return [...byKey.values()].sort(compare);
}

function identitiesOnlyIn(index: WhitelistIndex, other: WhitelistIndex): string[] {
  const byKey = new Map<string, string>();
  for (const e of index.entries) {
    if (!other.isDnListed(e.dnKey) && !byKey.has(e.dnKey)) byKey.set(e.dnKey, e.dnDisplay);
  }
  return [...byKey.values()].sort(compare);
}

/** Code-unit order: the same on every host, whatever the locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
