/**
 * The certificate history of the ledger (trust/peers.ts PeerHistoryBackend) on the shared store: the
 * fingerprints seen per listed identity are the fleet's, so a renewal seen on MX1 is not news on MX2.
 *
 * An adapter between two shapes: the store's (RedisPeerHistory: the identity's last fingerprint,
 * whatever its digest, first-seen order) and the ledger's (`previous` only of the same digest, last-seen
 * order, canonical fingerprints and known frontends only). Every sighting is also kept by the local
 * backend (the state-dir file), which costs a Map update: while the store is slow or gone (each call
 * bounded by the store deadline), the answer of that call comes from it, store_errors_total{op="peers"}
 * counts it, and nothing waits longer or decides differently. Nothing of this is on the answer path:
 * the ledger records after the answer and never awaits.
 */
import type { Frontend } from '../trust/facts.js';
import { digestOf, isCanonicalFingerprint, type Fingerprint } from '../trust/fingerprint.js';
import {
  MAX_FINGERPRINTS_PER_IDENTITY,
  type PeerFingerprintSeen,
  type PeerHistoryBackend,
  type PeerIdentityHistory,
  type PeerRecordResult,
} from '../trust/peers.js';
import type { PeerIdentity, PeerSighting } from './peer-history.js';
import type { StoreHealth } from './shared-buckets.js';
import { StoreError } from './store.js';

/** What the store offers for the history (RedisPeerHistory, or MemoryPeerSightings in tests and without a server). */
export interface PeerSightings {
  record(identity: string, fingerprint: string, frontend: string, nowMs: number): Promise<PeerSighting>;
  list(): Promise<PeerIdentity[]>;
}

/**
 * list() reads one hash and one sorted set per identity (up to ~13 000 of them, pipelined): it is a
 * GET /v1/peers, not a decision, and gets this many store deadlines before the local history answers.
 */
export const LIST_DEADLINE_FACTOR = 20;

const FRONTENDS: ReadonlySet<string> = new Set<Frontend>(['policy', 'milter']);

/** `promise`, or a StoreError of `peers` once `ms` have passed (the timer is cleared as soon as either settles). */
export function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreError('peers', `no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function asStoreError(error: unknown): StoreError {
  return error instanceof StoreError ? error : new StoreError('peers', (error as Error)?.message ?? String(error));
}

export class SharedPeerHistory implements PeerHistoryBackend {
  /** The identities of the list in force (retain); null until the first list. */
  private listed: ReadonlySet<string> | null = null;

  constructor(
    private readonly shared: PeerSightings,
    /** The state-dir backend: written at every sighting, answers when the store does not. */
    private readonly local: PeerHistoryBackend,
    private readonly health: StoreHealth,
    private readonly timeoutMs: number,
  ) {}

  async record(identity: string, fingerprint: Fingerprint, frontend: Frontend, nowMs: number): Promise<PeerRecordResult> {
    const local = this.local.record(identity, fingerprint, frontend, nowMs);
    // Handled now: its failure must not be an unhandled rejection while the store is awaited.
    local.catch(() => undefined);
    let sighting: PeerSighting;
    try {
      sighting = await withDeadline(this.shared.record(identity, fingerprint, frontend, nowMs), this.timeoutMs);
    } catch (error) {
      this.health.failed('peers', asStoreError(error));
      return local;
    }
    this.health.succeeded('peers');
    // The store's `previous` is the identity's last fingerprint of any digest; the ledger's rule is the
    // same digest only (a digest setting changed on the MTA is not a certificate change).
    const previous =
      sighting.isNew &&
      sighting.previous !== null &&
      sighting.previous !== fingerprint &&
      isCanonicalFingerprint(sighting.previous) &&
      digestOf(sighting.previous) === digestOf(fingerprint)
        ? sighting.previous
        : null;
    return { isNew: sighting.isNew, previous, firstSeen: sighting.firstSeen };
  }

  async list(): Promise<readonly PeerIdentityHistory[]> {
    const listed = this.listed;
    let identities: PeerIdentity[];
    try {
      identities = await withDeadline(this.shared.list(), this.timeoutMs * LIST_DEADLINE_FACTOR);
    } catch (error) {
      this.health.failed('peers', asStoreError(error));
      return this.local.list();
    }
    this.health.succeeded('peers');
    const out: PeerIdentityHistory[] = [];
    for (const { identity, fingerprints } of identities) {
      // Only identities of the list in force: the store may hold others (an older list, another writer).
      if (listed !== null && !listed.has(identity)) continue;
      const seen: PeerFingerprintSeen[] = [];
      for (const f of fingerprints) {
        // What comes back is input: anything the ledger would not have written is left out.
        if (!isCanonicalFingerprint(f.fingerprint) || !FRONTENDS.has(f.frontend) || f.lastSeen < f.firstSeen) continue;
        seen.push({ fingerprint: f.fingerprint, firstSeen: f.firstSeen, lastSeen: f.lastSeen, frontend: f.frontend as Frontend });
      }
      seen.sort((a, b) => b.lastSeen - a.lastSeen);
      if (seen.length > 0) out.push({ identity, fingerprints: seen.slice(0, MAX_FINGERPRINTS_PER_IDENTITY) });
    }
    return out;
  }

  /**
   * The local history follows the list in force; the store's entries stay (another MX may still have
   * the older list, the store bounds fingerprints per identity) but list() shows only listed identities.
   */
  async retain(listed: ReadonlySet<string>): Promise<void> {
    this.listed = listed;
    await this.local.retain?.(listed);
  }
}

/**
 * The store's history shape in memory (one process): for tests of the adapter, and the reference of
 * what RedisPeerHistory's script does (last fingerprint of any digest, trimmed by first-seen).
 */
export class MemoryPeerSightings implements PeerSightings {
  private readonly identities = new Map<
    string,
    { last: string; seen: Map<string, { firstSeen: number; lastSeen: number; frontend: string }> }
  >();

  constructor(private readonly maxPerIdentity = 16) {}

  record(identity: string, fingerprint: string, frontend: string, nowMs: number): Promise<PeerSighting> {
    let entry = this.identities.get(identity);
    const previous = entry?.last ?? null;
    if (entry === undefined) {
      entry = { last: fingerprint, seen: new Map() };
      this.identities.set(identity, entry);
    }
    const known = entry.seen.get(fingerprint);
    if (known === undefined) {
      entry.seen.set(fingerprint, { firstSeen: nowMs, lastSeen: nowMs, frontend });
      while (entry.seen.size > this.maxPerIdentity) {
        let oldest: string | null = null;
        for (const [f, s] of entry.seen) if (oldest === null || s.firstSeen < entry.seen.get(oldest)!.firstSeen) oldest = f;
        entry.seen.delete(oldest!);
      }
    } else {
      known.lastSeen = nowMs;
      known.frontend = frontend;
    }
    entry.last = fingerprint;
    return Promise.resolve({ isNew: known === undefined, previous, firstSeen: known?.firstSeen ?? nowMs });
  }

  list(): Promise<PeerIdentity[]> {
    return Promise.resolve(
      [...this.identities].map(([identity, { seen }]) => ({
        identity,
        fingerprints: [...seen].map(([fingerprint, s]) => ({ fingerprint, ...s })).sort((a, b) => b.firstSeen - a.firstSeen),
      })),
    );
  }
}
