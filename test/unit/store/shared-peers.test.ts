/**
 * The shared certificate history adapter (store/shared-peers.ts) between the ledger and the store's
 * history: two instances on one store see one history; a failing, hanging or garbled store falls back
 * to the local backend for that call, counted, and changes no decision (there is none to change here:
 * the ledger records after the answer).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryPeerSightings, SharedPeerHistory, type PeerSightings } from '../../../src/store/shared-peers.js';
import type { StoreHealth } from '../../../src/store/shared-buckets.js';
import { StoreError, type StoreOp } from '../../../src/store/store.js';
import { MemoryPeerHistory, PeerLedger, type PeerCertificateChange } from '../../../src/trust/peers.js';

const T0 = Date.UTC(2026, 3, 20, 3, 0, 0);
const fp = (digest: string, byte: string): string =>
  `${digest}:${Array.from({ length: digest === 'md5' ? 16 : 32 }, () => byte).join(':')}`;
const FP1 = fp('sha256', '11');
const FP2 = fp('sha256', '22');
const MD5 = fp('md5', '33');
const ID = 'mx.op1.test';
const LIST = { entries: [{ cn: ID, dnKey: 'CN=mx.op1.test', dnDisplay: 'CN=mx.op1.test' }] };

function health(): StoreHealth & { failures: StoreOp[]; successes: number } {
  const h = {
    failures: [] as StoreOp[],
    successes: 0,
    failed(op: StoreOp, error: StoreError) {
      assert.ok(error instanceof StoreError);
      h.failures.push(op);
    },
    succeeded() {
      h.successes += 1;
    },
  };
  return h;
}

const failing: PeerSightings = {
  record: () => Promise.reject(new Error('connection refused')),
  list: () => Promise.reject(new Error('connection refused')),
};
const hanging: PeerSightings = {
  record: () => new Promise(() => undefined),
  list: () => new Promise(() => undefined),
};

/** One instance: its own local history, the fleet's shared one, a ledger whose changes are collected. */
function instance(shared: PeerSightings, clock: { now: number }) {
  const local = new MemoryPeerHistory();
  const h = health();
  const backend = new SharedPeerHistory(shared, local, h, 50);
  const changes: PeerCertificateChange[] = [];
  const ledger = new PeerLedger(
    backend,
    { changed: (c) => changes.push(c), malformed: () => undefined, failed: (e) => assert.fail(String(e)) },
    () => clock.now,
  );
  ledger.setList(LIST);
  return { local, health: h, backend, ledger, changes };
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
};

describe('SharedPeerHistory', () => {
  test('two instances, one store: a change seen on MX1 is not news on MX2', async () => {
    const store = new MemoryPeerSightings();
    const clock = { now: T0 };
    const mx1 = instance(store, clock);
    const mx2 = instance(store, clock);
    mx1.ledger.observe('policy', ID, { cert: FP1, pubkey: null, malformed: 0 });
    await settle();
    clock.now += 120_000;
    // MX2 never saw FP1 itself: the renewal to FP2 is a change all the same.
    mx2.ledger.observe('milter', ID, { cert: FP2, pubkey: null, malformed: 0 });
    await settle();
    assert.equal(mx2.changes.length, 1);
    assert.equal(mx2.changes[0]!.previous, FP1);
    clock.now += 120_000;
    mx1.ledger.observe('policy', ID, { cert: FP2, pubkey: null, malformed: 0 });
    await settle();
    assert.equal(mx1.changes.length, 0, 'FP2 was news once, on MX2');
    // Each local history also holds what its instance saw (it answers while the store does not).
    assert.deepEqual(
      (await mx1.local.list())[0]!.fingerprints.map((f) => f.fingerprint),
      [FP2, FP1],
    );
    // The view is the fleet's, most recently seen first, in the ledger's shape.
    const listed = await mx2.backend.list();
    assert.deepEqual(listed, [
      {
        identity: ID,
        fingerprints: [
          { fingerprint: FP2, firstSeen: T0 + 120_000, lastSeen: T0 + 240_000, frontend: 'policy' },
          { fingerprint: FP1, firstSeen: T0, lastSeen: T0, frontend: 'policy' },
        ],
      },
    ]);
    assert.deepEqual(mx1.health.failures, []);
  });

  test("another digest is not a change (the store's `previous` is of any digest; the ledger's rule is one digest)", async () => {
    const store = new MemoryPeerSightings();
    const backend = new SharedPeerHistory(store, new MemoryPeerHistory(), health(), 50);
    assert.deepEqual(await backend.record(ID, FP1, 'policy', T0), { isNew: true, previous: null, firstSeen: T0 });
    assert.deepEqual(await backend.record(ID, MD5, 'policy', T0 + 1), { isNew: true, previous: null, firstSeen: T0 + 1 });
    assert.deepEqual(await backend.record(ID, FP1, 'policy', T0 + 2), { isNew: false, previous: null, firstSeen: T0 });
  });

  test('a failing store: the local history answers that call, store_errors counted; the store answers again when it is back', async () => {
    let down = true;
    const store = new MemoryPeerSightings();
    const flaky: PeerSightings = {
      record: (...a) => (down ? failing.record(...a) : store.record(...a)),
      list: () => (down ? failing.list() : store.list()),
    };
    const local = new MemoryPeerHistory();
    const h = health();
    const backend = new SharedPeerHistory(flaky, local, h, 50);
    assert.deepEqual(await backend.record(ID, FP1, 'policy', T0), { isNew: true, previous: null, firstSeen: T0 });
    assert.deepEqual(await backend.record(ID, FP2, 'policy', T0 + 1), { isNew: true, previous: FP1, firstSeen: T0 + 1 });
    assert.deepEqual(
      (await backend.list()).map((i) => i.fingerprints.length),
      [2],
      'the local list',
    );
    assert.deepEqual(h.failures, ['peers', 'peers', 'peers']);
    down = false;
    assert.deepEqual(await backend.record(ID, FP2, 'policy', T0 + 2), { isNew: true, previous: null, firstSeen: T0 + 2 });
    assert.equal(h.successes, 1);
  });

  test('a store that never answers: the deadline gives the local answer', async () => {
    const h = health();
    const backend = new SharedPeerHistory(hanging, new MemoryPeerHistory(), h, 20);
    assert.deepEqual(await backend.record(ID, FP1, 'milter', T0), { isNew: true, previous: null, firstSeen: T0 });
    assert.equal((await backend.list()).length, 1);
    assert.deepEqual(h.failures, ['peers', 'peers']);
  });

  test('what the store returns is input: garbled fingerprints and frontends are left out, the count is bounded', async () => {
    const garbled: PeerSightings = {
      record: () => Promise.resolve({ isNew: true, previous: 'not a fingerprint', firstSeen: T0 }),
      list: () =>
        Promise.resolve([
          {
            identity: ID,
            fingerprints: [
              { fingerprint: 'AA', firstSeen: T0, lastSeen: T0, frontend: 'policy' },
              { fingerprint: FP1, firstSeen: T0, lastSeen: T0, frontend: 'socketmap' },
              { fingerprint: FP2, firstSeen: T0, lastSeen: T0 - 1, frontend: 'policy' },
              ...Array.from({ length: 12 }, (_, i) => ({
                fingerprint: fp('sha256', (0x40 + i).toString(16).toUpperCase()),
                firstSeen: T0,
                lastSeen: T0 + i,
                frontend: 'milter',
              })),
            ],
          },
          { identity: 'mx.op2.test', fingerprints: [{ fingerprint: 'BB', firstSeen: T0, lastSeen: T0, frontend: 'policy' }] },
        ]),
    };
    const backend = new SharedPeerHistory(garbled, new MemoryPeerHistory(), health(), 50);
    assert.deepEqual(await backend.record(ID, FP1, 'policy', T0), { isNew: true, previous: null, firstSeen: T0 });
    const listed = await backend.list();
    assert.equal(listed.length, 1, 'an identity left with no usable fingerprint is not listed');
    assert.equal(listed[0]!.fingerprints.length, 8);
    assert.equal(listed[0]!.fingerprints[0]!.lastSeen, T0 + 11, 'most recently seen first');
  });

  test('list() shows only identities of the list in force: a store holding others (hostile, older list) adds nothing', async () => {
    const store = new MemoryPeerSightings();
    await store.record('not-listed.test', FP1, 'policy', T0);
    const backend = new SharedPeerHistory(store, new MemoryPeerHistory(), health(), 50);
    await backend.record(ID, FP1, 'policy', T0);
    assert.equal((await backend.list()).length, 2, 'no list yet: everything the store holds');
    await backend.retain(new Set([ID]));
    assert.deepEqual(
      (await backend.list()).map((h) => h.identity),
      [ID],
    );
  });

  test('retain() follows the list in force locally', async () => {
    const local = new MemoryPeerHistory();
    const backend = new SharedPeerHistory(new MemoryPeerSightings(), local, health(), 50);
    await backend.record(ID, FP1, 'policy', T0);
    await backend.record('gone.test', FP1, 'policy', T0);
    await backend.retain(new Set([ID]));
    assert.deepEqual(
      local.listSync().map((h) => h.identity),
      [ID],
    );
  });
});
