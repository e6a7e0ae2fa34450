import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  LAST_SEEN_RESOLUTION_MS,
  MAX_FINGERPRINTS_PER_IDENTITY,
  MemoryPeerHistory,
  PEER_HISTORY_FORMAT,
  PeerLedger,
  parsePeerHistory,
  type PeerCertificateChange,
  type PeerHistoryBackend,
  type PeerSink,
} from '../../../src/trust/peers.js';
import type { CertFingerprints } from '../../../src/trust/fingerprint.js';
import type { Frontend } from '../../../src/trust/facts.js';

const T0 = Date.UTC(2026, 3, 20, 3, 0, 0);

/** A canonical sha256 fingerprint whose bytes are all `n`. */
function fp(n: number, digest: 'sha256' | 'md5' = 'sha256'): string {
  const byte = n.toString(16).toUpperCase().padStart(2, '0');
  return `${digest}:${Array.from({ length: digest === 'md5' ? 16 : 32 }, () => byte).join(':')}`;
}

function fps(cert: string | null, pubkey: string | null = null, malformed = 0): CertFingerprints {
  return { cert, pubkey, malformed };
}

const LIST = {
  entries: [
    { cn: 'mx.op1.test', dnKey: 'CN=mx.op1.test,O=OP1', dnDisplay: 'CN=mx.op1.test,O=OP1' },
    { cn: 'mx.op2.test', dnKey: 'CN=mx.op2.test,O=OP2', dnDisplay: 'CN=mx.op2.test,O=OP2' },
  ],
};

interface Recorded {
  changes: PeerCertificateChange[];
  malformed: Array<[Frontend, number]>;
  failures: unknown[];
}

function ledgerWith(backend: PeerHistoryBackend = new MemoryPeerHistory(), clock = { now: T0 }) {
  const seen: Recorded = { changes: [], malformed: [], failures: [] };
  const sink: PeerSink = {
    changed: (c) => seen.changes.push(c),
    malformed: (f, n) => seen.malformed.push([f, n]),
    failed: (e) => seen.failures.push(e),
  };
  const ledger = new PeerLedger(backend, sink, () => clock.now);
  ledger.setList(LIST);
  return { ledger, seen, clock, backend };
}

/** Lets the backend's promises settle. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('MemoryPeerHistory', () => {
  test('first sighting is new without a previous; the same again is not new; another is new with the previous', () => {
    const h = new MemoryPeerHistory();
    assert.deepEqual(h.recordSync('id', fp(1), 'policy', T0), { isNew: true, previous: null, firstSeen: T0 });
    assert.deepEqual(h.recordSync('id', fp(1), 'policy', T0 + 10), { isNew: false, previous: null, firstSeen: T0 });
    assert.deepEqual(h.recordSync('id', fp(2), 'milter', T0 + 20), { isNew: true, previous: fp(1), firstSeen: T0 + 20 });
    const [entry] = h.listSync();
    assert.deepEqual(entry, {
      identity: 'id',
      fingerprints: [
        { fingerprint: fp(2), firstSeen: T0 + 20, lastSeen: T0 + 20, frontend: 'milter' },
        { fingerprint: fp(1), firstSeen: T0, lastSeen: T0 + 10, frontend: 'policy' },
      ],
    });
  });

  test('previous is the most recently seen fingerprint of the same digest; a first one of another digest is no change', () => {
    const h = new MemoryPeerHistory();
    h.recordSync('id', fp(1), 'policy', T0);
    h.recordSync('id', fp(2), 'policy', T0 + 1);
    h.recordSync('id', fp(1), 'policy', T0 + 2); // back to the first certificate (two MX behind one name)
    assert.equal(h.recordSync('id', fp(3), 'policy', T0 + 3).previous, fp(1));
    // The MTA's digest setting changed (md5 → sha256 or the reverse): not a certificate change.
    assert.deepEqual(h.recordSync('id', fp(9, 'md5'), 'milter', T0 + 4), { isNew: true, previous: null, firstSeen: T0 + 4 });
  });

  test(`at most ${MAX_FINGERPRINTS_PER_IDENTITY} fingerprints per identity: the least recently seen goes`, () => {
    const h = new MemoryPeerHistory();
    for (let i = 0; i < MAX_FINGERPRINTS_PER_IDENTITY; i++) h.recordSync('id', fp(i), 'policy', T0 + i);
    h.recordSync('id', fp(0), 'policy', T0 + 100); // fp(0) seen again: fp(1) is now the oldest
    h.recordSync('id', fp(200), 'policy', T0 + 101);
    const kept = h.listSync()[0]!.fingerprints.map((f) => f.fingerprint);
    assert.equal(kept.length, MAX_FINGERPRINTS_PER_IDENTITY);
    assert.ok(kept.includes(fp(0)) && kept.includes(fp(200)));
    assert.ok(!kept.includes(fp(1)), 'the least recently seen was evicted');
    // An evicted fingerprint seen again is new again (the bound costs this, and says so).
    assert.equal(h.recordSync('id', fp(1), 'policy', T0 + 102).isNew, true);
  });

  test('identities are capped: past the cap nothing new is recorded', () => {
    const h = new MemoryPeerHistory(2);
    h.recordSync('a', fp(1), 'policy', T0);
    h.recordSync('b', fp(1), 'policy', T0);
    assert.deepEqual(h.recordSync('c', fp(1), 'policy', T0), { isNew: false, previous: null, firstSeen: T0 });
    assert.equal(h.size, 2);
  });

  test('retain forgets identities no longer listed', () => {
    const h = new MemoryPeerHistory();
    h.recordSync('a', fp(1), 'policy', T0);
    h.recordSync('b', fp(1), 'policy', T0);
    assert.equal(h.retainSync(new Set(['b'])), 1);
    assert.deepEqual(
      h.listSync().map((e) => e.identity),
      ['b'],
    );
  });
});

describe('PeerLedger', () => {
  test('a renewal behind a listed identity is reported once, with both fingerprints and the frontend', async () => {
    const { ledger, seen, clock } = ledgerWith();
    ledger.observe('policy', 'mx.op1.test', fps(fp(1), fp(11)));
    await settle();
    assert.deepEqual(seen.changes, [], 'a first sighting is no change');
    clock.now += 3_600_000;
    ledger.observe('policy', 'mx.op1.test', fps(fp(2), fp(12)));
    ledger.observe('policy', 'mx.op1.test', fps(fp(2), fp(12)));
    await settle();
    assert.deepEqual(seen.changes, [
      {
        identity: 'mx.op1.test',
        previous: fp(1),
        fingerprint: fp(2),
        pubkeyFingerprint: fp(12),
        frontend: 'policy',
        at: T0 + 3_600_000,
      },
    ]);
  });

  test('only identities of the list in force are recorded; none before a list', async () => {
    const backend = new MemoryPeerHistory();
    const sink: PeerSink = { changed: () => undefined, malformed: () => undefined, failed: () => undefined };
    const ledger = new PeerLedger(backend, sink, () => T0);
    ledger.observe('policy', 'mx.op1.test', fps(fp(1)));
    await settle();
    assert.equal(backend.size, 0, 'nothing before a list is in force');
    ledger.setList(LIST);
    ledger.observe('policy', 'not-listed.example', fps(fp(1)));
    ledger.observe('policy', null, fps(fp(1)));
    ledger.observe('milter', 'CN=mx.op2.test,O=OP2', fps(fp(3)));
    await settle();
    assert.deepEqual(
      backend.listSync().map((e) => e.identity),
      ['CN=mx.op2.test,O=OP2'],
    );
    // The next list drops op2: its history goes.
    ledger.setList({ entries: [LIST.entries[0]!] });
    await settle();
    assert.equal(backend.size, 0);
  });

  test('malformed values are counted per frontend; a certificate without one is not recorded', async () => {
    const { ledger, seen, backend } = ledgerWith();
    ledger.observe('milter', 'mx.op1.test', fps(null, null, 1));
    ledger.observe('policy', 'mx.op1.test', null);
    await settle();
    assert.deepEqual(seen.malformed, [['milter', 1]]);
    assert.equal((backend as MemoryPeerHistory).size, 0);
  });

  test('the same fingerprint reaches the backend at most once per resolution interval', async () => {
    let calls = 0;
    const memory = new MemoryPeerHistory();
    const counting: PeerHistoryBackend = {
      record: (...args) => {
        calls += 1;
        return memory.record(...args);
      },
      list: () => memory.list(),
    };
    const { ledger, clock } = ledgerWith(counting);
    for (let i = 0; i < 100; i++) ledger.observe('policy', 'mx.op1.test', fps(fp(1)));
    assert.equal(calls, 1);
    clock.now += LAST_SEEN_RESOLUTION_MS;
    ledger.observe('policy', 'mx.op1.test', fps(fp(1)));
    ledger.observe('policy', 'mx.op1.test', fps(fp(2)));
    assert.equal(calls, 3);
    await settle();
    assert.equal(memory.listSync()[0]!.fingerprints.find((f) => f.fingerprint === fp(1))!.lastSeen, T0 + LAST_SEEN_RESOLUTION_MS);
  });

  test('a failing backend (rejecting or throwing) is reported to the sink, never to the caller', async () => {
    const rejecting: PeerHistoryBackend = {
      record: () => Promise.reject(new Error('store down')),
      list: () => Promise.resolve([]),
    };
    const a = ledgerWith(rejecting);
    assert.doesNotThrow(() => a.ledger.observe('policy', 'mx.op1.test', fps(fp(1))));
    await settle();
    assert.equal((a.seen.failures[0] as Error).message, 'store down');
    const throwing: PeerHistoryBackend = {
      record: () => {
        throw new Error('sync fault');
      },
      list: () => Promise.resolve([]),
    };
    const b = ledgerWith(throwing);
    assert.doesNotThrow(() => b.ledger.observe('policy', 'mx.op1.test', fps(fp(1))));
    assert.equal((b.seen.failures[0] as Error).message, 'sync fault');
  });

  test('snapshot: the most recent new certificate first, times in ISO 8601', async () => {
    const { ledger, clock } = ledgerWith();
    ledger.observe('policy', 'mx.op1.test', fps(fp(1)));
    clock.now += 1000;
    ledger.observe('policy', 'mx.op2.test', fps(fp(5)));
    clock.now += 1000;
    ledger.observe('policy', 'mx.op1.test', fps(fp(2)));
    await settle();
    const snap = await ledger.snapshot();
    assert.equal(snap.identities, 2);
    assert.deepEqual(
      snap.peers.map((p) => p.identity),
      ['mx.op1.test', 'mx.op2.test'],
    );
    assert.deepEqual(snap.peers[0]!.fingerprints[0], {
      fingerprint: fp(2),
      firstSeen: new Date(T0 + 2000).toISOString(),
      lastSeen: new Date(T0 + 2000).toISOString(),
      frontend: 'policy',
    });
  });
});

/** The file's JSON, loosely typed so that each case can damage one field. */
interface LooseSeen {
  fingerprint: unknown;
  firstSeen: unknown;
  lastSeen: unknown;
  frontend: unknown;
}
interface LooseFile {
  format: unknown;
  identities: Array<{ identity: unknown; fingerprints: LooseSeen[] }>;
}

describe('parsePeerHistory (peers.json read back)', () => {
  const good = (): LooseFile => ({
    format: PEER_HISTORY_FORMAT,
    identities: [
      { identity: 'mx.op1.test', fingerprints: [{ fingerprint: fp(1), firstSeen: T0, lastSeen: T0 + 5, frontend: 'policy' }] },
    ],
  });

  test('a file the history wrote round-trips', () => {
    const h = new MemoryPeerHistory();
    h.recordSync('mx.op1.test', fp(1), 'policy', T0);
    h.recordSync('mx.op1.test', fp(2), 'milter', T0 + 1);
    const parsed = parsePeerHistory(JSON.parse(JSON.stringify(h.snapshot())), T0 + 10);
    assert.ok(parsed.ok);
    const back = new MemoryPeerHistory();
    back.restore(parsed.identities);
    assert.deepEqual(back.listSync(), h.listSync());
    assert.equal(back.recordSync('mx.op1.test', fp(3), 'policy', T0 + 20).previous, fp(2));
  });

  test('hostile or damaged content is refused whole, with a reason', () => {
    const cases: Array<[string, (j: LooseFile) => unknown]> = [
      ['another format', (j) => ({ ...j, format: 'x' })],
      ['not an object', () => []],
      ['identities not an array', (j) => ({ ...j, identities: {} })],
      ['a non-canonical fingerprint', (j) => ((j.identities[0]!.fingerprints[0]!.fingerprint = 'sha256:zz'), j)],
      ['lastSeen before firstSeen', (j) => ((j.identities[0]!.fingerprints[0]!.lastSeen = T0 - 1), j)],
      ['a time far in the future', (j) => ((j.identities[0]!.fingerprints[0]!.lastSeen = T0 + 10 * 86_400_000), j)],
      ['a time that is not an integer', (j) => ((j.identities[0]!.fingerprints[0]!.firstSeen = '2026'), j)],
      ['an unknown frontend', (j) => ((j.identities[0]!.fingerprints[0]!.frontend = 'smtp'), j)],
      ['an empty identity', (j) => ((j.identities[0]!.identity = ''), j)],
      ['a huge identity', (j) => ((j.identities[0]!.identity = 'x'.repeat(20_000)), j)],
      ['a duplicate identity', (j) => (j.identities.push(j.identities[0]!), j)],
      ['a duplicate fingerprint', (j) => (j.identities[0]!.fingerprints.push(j.identities[0]!.fingerprints[0]!), j)],
      [
        'too many fingerprints',
        (j) => (
          (j.identities[0]!.fingerprints = Array.from({ length: MAX_FINGERPRINTS_PER_IDENTITY + 1 }, (_, i) => ({
            fingerprint: fp(i),
            firstSeen: T0,
            lastSeen: T0,
            frontend: 'policy',
          }))),
          j
        ),
      ],
      ['no fingerprints', (j) => ((j.identities[0]!.fingerprints = []), j)],
      [
        '__proto__ games',
        (): unknown => JSON.parse(`{"format":"${PEER_HISTORY_FORMAT}","identities":[{"__proto__":{"identity":"x"}}]}`),
      ],
    ];
    for (const [name, mutate] of cases) {
      const result = parsePeerHistory(mutate(good()), T0 + 10);
      assert.equal(result.ok, false, name);
      assert.ok(!result.ok && result.error.length > 0, name);
    }
    assert.equal(parsePeerHistory(good(), T0 + 10).ok, true);
    assert.equal(parsePeerHistory(good(), T0 + 10, { maxIdentities: 0 }).ok, false, 'more identities than the cap');
  });
});
