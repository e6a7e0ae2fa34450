/**
 * Certificates seen behind each listed identity (issue #20, point 5). A listed operator renews its
 * certificate every ~3 years; someone else may also hold a certificate with that CN. Neither changes
 * a decision — the list binds names, not keys — but someone should see it: per listed identity we
 * remember the fingerprints seen (first and last seen), and a new one for a known identity is a
 * certificate change, reported to a sink (log line, metric).
 *
 * Off the decision path: DecisionService hands over what decide() already found (the listed identity
 * it matched, `Decision.operator`) and the MTA's fingerprints after the answer is taken; recording is
 * asynchronous, never awaited by an answer, and its failures are only logged.
 *
 * Bounded: identities are those of the list in force (anything else is not recorded, and identities
 * that leave the list are forgotten at the swap); at most MAX_FINGERPRINTS_PER_IDENTITY fingerprints
 * each, the least recently seen evicted. Pure: the clock is injected, storage is a PeerHistoryBackend
 * (MemoryPeerHistory here; the state-dir file and a shared store wrap or replace it).
 */
import type { Frontend } from './facts.js';
import { digestOf, isCanonicalFingerprint, type CertFingerprints, type Fingerprint } from './fingerprint.js';
import type { ListedOperators } from './operators.js';
import { MAX_DN_LENGTH } from './dn.js';

export const MAX_FINGERPRINTS_PER_IDENTITY = 8;
/** Hard cap whatever the list says (the real list has ~6 500 entries: under 13 000 CN + DN identities). */
export const MAX_IDENTITIES = 100_000;
/** A DN key escapes characters of the DN: up to 3 × its length. */
export const MAX_IDENTITY_CHARS = 3 * MAX_DN_LENGTH;
/**
 * The same fingerprint for the same identity is passed to the backend at most once a minute: the
 * hot path then only does one Map lookup, and `lastSeen` is exact to the minute.
 */
export const LAST_SEEN_RESOLUTION_MS = 60_000;

export interface PeerFingerprintSeen {
  readonly fingerprint: Fingerprint;
  /** Epoch milliseconds. */
  readonly firstSeen: number;
  readonly lastSeen: number;
  /** The frontend that saw it last. */
  readonly frontend: Frontend;
}

export interface PeerIdentityHistory {
  /** The listed identity: a normalised CN (Postfix) or a DN key (Exim, Sendmail). */
  readonly identity: string;
  /** Most recently seen first. */
  readonly fingerprints: readonly PeerFingerprintSeen[];
}

export interface PeerRecordResult {
  /** This fingerprint was not in the identity's history. */
  readonly isNew: boolean;
  /**
   * The identity's most recently seen *other* fingerprint of the same digest (md5, sha256, …), or
   * null: a first sighting, or a digest not seen before for it (the MTA's digest setting changed),
   * which is not a certificate change.
   */
  readonly previous: Fingerprint | null;
  /** When this fingerprint was first seen for this identity (now, when new). */
  readonly firstSeen: number;
}

/**
 * Where the history lives: in memory (+ the state dir) by default, a shared store when configured.
 * Implementations keep the bounds above and the `previous` rule of PeerRecordResult.
 */
export interface PeerHistoryBackend {
  record(identity: string, fingerprint: Fingerprint, frontend: Frontend, nowMs: number): Promise<PeerRecordResult>;
  list(): Promise<readonly PeerIdentityHistory[]>;
  /** Forget identities not in `listed` (the list in force changed). Optional: a shared store may expire them itself. */
  retain?(listed: ReadonlySet<string>): Promise<void>;
}

interface MutableSeen {
  readonly fingerprint: Fingerprint;
  readonly firstSeen: number;
  lastSeen: number;
  frontend: Frontend;
}

/** The default backend: a Map, bounded; snapshot()/restore for the state-dir file. */
export class MemoryPeerHistory implements PeerHistoryBackend {
  private readonly identities = new Map<string, MutableSeen[]>();
  /** Bumped on every change: the file store writes only when it moved. */
  revision = 0;
  /** Bumped when a fingerprint was added or an identity forgotten (not on a lastSeen update). */
  structuralRevision = 0;

  constructor(
    private readonly maxIdentities: number = MAX_IDENTITIES,
    private readonly maxFingerprints: number = MAX_FINGERPRINTS_PER_IDENTITY,
  ) {}

  recordSync(identity: string, fingerprint: Fingerprint, frontend: Frontend, nowMs: number): PeerRecordResult {
    let seen = this.identities.get(identity);
    if (seen === undefined) {
      if (this.identities.size >= this.maxIdentities) return { isNew: false, previous: null, firstSeen: nowMs };
      seen = [];
      this.identities.set(identity, seen);
    }
    const known = seen.find((s) => s.fingerprint === fingerprint);
    this.revision += 1;
    if (known !== undefined) {
      known.lastSeen = Math.max(known.lastSeen, nowMs);
      known.frontend = frontend;
      return { isNew: false, previous: null, firstSeen: known.firstSeen };
    }
    const digest = digestOf(fingerprint);
    let previous: MutableSeen | null = null;
    for (const s of seen)
      if (digestOf(s.fingerprint) === digest && (previous === null || s.lastSeen > previous.lastSeen)) previous = s;
    if (seen.length >= this.maxFingerprints) {
      let oldest = 0;
      for (let i = 1; i < seen.length; i++) if (seen[i]!.lastSeen < seen[oldest]!.lastSeen) oldest = i;
      seen.splice(oldest, 1);
    }
    seen.push({ fingerprint, firstSeen: nowMs, lastSeen: nowMs, frontend });
    this.structuralRevision += 1;
    return { isNew: true, previous: previous?.fingerprint ?? null, firstSeen: nowMs };
  }

  record(identity: string, fingerprint: Fingerprint, frontend: Frontend, nowMs: number): Promise<PeerRecordResult> {
    return Promise.resolve(this.recordSync(identity, fingerprint, frontend, nowMs));
  }

  listSync(): PeerIdentityHistory[] {
    const out: PeerIdentityHistory[] = [];
    for (const [identity, seen] of this.identities) {
      out.push({
        identity,
        fingerprints: [...seen].sort((a, b) => b.lastSeen - a.lastSeen).map((s) => ({ ...s })),
      });
    }
    return out;
  }

  list(): Promise<readonly PeerIdentityHistory[]> {
    return Promise.resolve(this.listSync());
  }

  retainSync(listed: ReadonlySet<string>): number {
    let forgotten = 0;
    for (const identity of this.identities.keys()) {
      if (!listed.has(identity)) {
        this.identities.delete(identity);
        forgotten += 1;
      }
    }
    if (forgotten > 0) {
      this.revision += 1;
      this.structuralRevision += 1;
    }
    return forgotten;
  }

  retain(listed: ReadonlySet<string>): Promise<void> {
    this.retainSync(listed);
    return Promise.resolve();
  }

  get size(): number {
    return this.identities.size;
  }

  /** What the state-dir file holds. */
  snapshot(): PeerHistoryFile {
    return { format: PEER_HISTORY_FORMAT, identities: this.listSync() };
  }

  /** Loads a verified file's content (see parsePeerHistory); replaces what is held. */
  restore(histories: readonly PeerIdentityHistory[]): void {
    this.identities.clear();
    for (const h of histories)
      this.identities.set(
        h.identity,
        h.fingerprints.map((s) => ({ ...s })),
      );
  }
}

export const PEER_HISTORY_FORMAT = 'mssante-policyd/peers/1';

export interface PeerHistoryFile {
  readonly format: typeof PEER_HISTORY_FORMAT;
  readonly identities: readonly PeerIdentityHistory[];
}

const FRONTENDS: ReadonlySet<string> = new Set<Frontend>(['policy', 'milter']);
/** Timestamps from before this project existed are not ours (2020-01-01). */
const MIN_TIMESTAMP_MS = 1_577_836_800_000;
/** A clock slightly ahead on the host that wrote it is tolerated; years ahead is not. */
const MAX_FUTURE_MS = 86_400_000;

function isTimestamp(v: unknown, nowMs: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= MIN_TIMESTAMP_MS && v <= nowMs + MAX_FUTURE_MS;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseSeen(v: unknown, nowMs: number): PeerFingerprintSeen | string {
  if (!isRecord(v)) return 'a fingerprint entry is not an object';
  const { fingerprint, firstSeen, lastSeen, frontend } = v;
  if (!isCanonicalFingerprint(fingerprint)) return 'a fingerprint is not a canonical digest';
  if (!isTimestamp(firstSeen, nowMs) || !isTimestamp(lastSeen, nowMs) || lastSeen < firstSeen)
    return 'a fingerprint has impossible first/last seen times';
  if (typeof frontend !== 'string' || !FRONTENDS.has(frontend)) return 'a fingerprint names an unknown frontend';
  return { fingerprint, firstSeen, lastSeen, frontend: frontend as Frontend };
}

function parseIdentity(v: unknown, nowMs: number, maxFingerprints: number): PeerIdentityHistory | string {
  if (!isRecord(v)) return 'an identity entry is not an object';
  const { identity, fingerprints } = v;
  if (typeof identity !== 'string' || identity === '' || identity.length > MAX_IDENTITY_CHARS)
    return 'an identity is not a usable name';
  if (!Array.isArray(fingerprints) || fingerprints.length === 0 || fingerprints.length > maxFingerprints)
    return `identity ${JSON.stringify(identity.slice(0, 80))}: fingerprints missing or over ${maxFingerprints}`;
  const out: PeerFingerprintSeen[] = [];
  const distinct = new Set<string>();
  for (const f of fingerprints) {
    const seen = parseSeen(f, nowMs);
    if (typeof seen === 'string') return seen;
    if (distinct.has(seen.fingerprint)) return 'a fingerprint is listed twice for one identity';
    distinct.add(seen.fingerprint);
    out.push(seen);
  }
  return { identity, fingerprints: out };
}

/**
 * The state-dir file, verified: the exact format, every bound, canonical fingerprints, sane times.
 * Anything else is refused whole (an error text for the log), never partly trusted.
 */
export function parsePeerHistory(
  json: unknown,
  nowMs: number,
  limits: { readonly maxIdentities?: number; readonly maxFingerprints?: number } = {},
): { readonly ok: true; readonly identities: PeerIdentityHistory[] } | { readonly ok: false; readonly error: string } {
  const maxIdentities = limits.maxIdentities ?? MAX_IDENTITIES;
  const maxFingerprints = limits.maxFingerprints ?? MAX_FINGERPRINTS_PER_IDENTITY;
  if (!isRecord(json) || json.format !== PEER_HISTORY_FORMAT) return { ok: false, error: `not a ${PEER_HISTORY_FORMAT} file` };
  const list = json.identities;
  if (!Array.isArray(list)) return { ok: false, error: 'identities is not an array' };
  if (list.length > maxIdentities) return { ok: false, error: `more than ${maxIdentities} identities` };
  const identities: PeerIdentityHistory[] = [];
  const names = new Set<string>();
  for (const v of list) {
    const parsed = parseIdentity(v, nowMs, maxFingerprints);
    if (typeof parsed === 'string') return { ok: false, error: parsed };
    if (names.has(parsed.identity)) return { ok: false, error: 'an identity is listed twice' };
    names.add(parsed.identity);
    identities.push(parsed);
  }
  return { ok: true, identities };
}

/** One certificate change: what the sink logs and counts. */
export interface PeerCertificateChange {
  readonly identity: string;
  readonly previous: Fingerprint;
  readonly fingerprint: Fingerprint;
  /** The new certificate's public-key digest when the MTA gave it (did the key change too?). */
  readonly pubkeyFingerprint: Fingerprint | null;
  readonly frontend: Frontend;
  readonly at: number;
}

export interface PeerSink {
  changed(change: PeerCertificateChange): void;
  /** Fingerprint values that were not digests, ignored. */
  malformed(frontend: Frontend, count: number): void;
  /** The backend failed (a shared store down): logged, nothing else. */
  failed(error: unknown): void;
}

export interface PeersSnapshot {
  readonly identities: number;
  readonly peers: readonly {
    readonly identity: string;
    readonly fingerprints: readonly {
      readonly fingerprint: string;
      readonly firstSeen: string;
      readonly lastSeen: string;
      readonly frontend: Frontend;
    }[];
  }[];
}

/** The recorder DecisionService calls after each answer; bounds everything to the list in force. */
export class PeerLedger {
  /** null until a list is in force: nothing is recorded before. */
  private listed: ReadonlySet<string> | null = null;
  /** identity → the fingerprint last passed to the backend and when (LAST_SEEN_RESOLUTION_MS). */
  private readonly lastPassed = new Map<string, { fingerprint: string; at: number }>();

  constructor(
    readonly backend: PeerHistoryBackend,
    private readonly sink: PeerSink,
    private readonly clock: () => number = Date.now,
  ) {}

  /** The list in force changed: only its identities (normalised CNs and DN keys) are recorded from now on. */
  setList(index: ListedOperators | null): void {
    if (index === null) return;
    const listed = new Set<string>();
    for (const e of index.entries) {
      if (e.cn !== '') listed.add(e.cn);
      listed.add(e.dnKey);
    }
    this.listed = listed;
    this.lastPassed.clear();
    if (this.backend.retain !== undefined) this.backend.retain(listed).catch((error: unknown) => this.sink.failed(error));
  }

  /**
   * After an answer: `identity` is the listed identity decide() matched (Decision.operator), null
   * when none. Returns at once; the backend's promise is never awaited by the caller.
   */
  observe(frontend: Frontend, identity: string | null | undefined, fingerprints: CertFingerprints | null | undefined): void {
    if (fingerprints === null || fingerprints === undefined) return;
    if (fingerprints.malformed > 0) this.sink.malformed(frontend, fingerprints.malformed);
    const given = fingerprints.cert;
    if (identity === null || identity === undefined || given === null) return;
    const now = this.clock();
    const last = this.lastPassed.get(identity);
    if (last !== undefined && last.fingerprint === given && now - last.at < LAST_SEEN_RESOLUTION_MS) return;
    // lastPassed only ever holds identities of the list in force (cleared at each swap): the check is needed on a miss only.
    if (last === undefined && (this.listed === null || !this.listed.has(identity))) return;
    // Detached: the request's strings are slices of a whole network chunk (the fingerprint too: its
    // canonical form may be the MTA's value behind the digest name).
    const key = (' ' + identity).slice(1);
    const fingerprint = (' ' + given).slice(1);
    this.lastPassed.set(key, { fingerprint, at: now });
    let pending: Promise<PeerRecordResult>;
    try {
      pending = this.backend.record(key, fingerprint, frontend, now);
    } catch (error) {
      this.sink.failed(error);
      return;
    }
    pending.then(
      (result) => {
        if (!result.isNew || result.previous === null) return;
        this.sink.changed({
          identity: key,
          previous: result.previous,
          fingerprint,
          pubkeyFingerprint: fingerprints.pubkey,
          frontend,
          at: now,
        });
      },
      (error: unknown) => this.sink.failed(error),
    );
  }

  /** GET /v1/peers: identities whose certificate changed most recently first. */
  async snapshot(): Promise<PeersSnapshot> {
    const histories = await this.backend.list();
    const newest = (h: PeerIdentityHistory): number => Math.max(...h.fingerprints.map((f) => f.firstSeen));
    const sorted = [...histories]
      .filter((h) => h.fingerprints.length > 0)
      .sort((a, b) => newest(b) - newest(a) || (a.identity < b.identity ? -1 : 1));
    return {
      identities: sorted.length,
      peers: sorted.map((h) => ({
        identity: h.identity,
        fingerprints: h.fingerprints.map((f) => ({
          fingerprint: f.fingerprint,
          firstSeen: new Date(f.firstSeen).toISOString(),
          lastSeen: new Date(f.lastSeen).toISOString(),
          frontend: f.frontend,
        })),
      })),
    };
  }
}
