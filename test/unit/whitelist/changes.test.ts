/**
 * The change function of two indexes: domains added, removed, moved onto other certificates (by
 * normalised identity: spellings of one DN are one certificate), identities added and removed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { changeCounts, diffIndexes, listChange, percentOf } from '../../../src/whitelist/changes.js';
import { buildIndex } from '../../support/index-builder.js';

const A = 'CN=mx.a.fr,OU=1,O=OP A,C=FR';
const A_OPENSSL = '/C=FR/O=OP A/OU=1/CN=mx.a.fr';
const B = 'CN=mx.b.fr,OU=2,O=OP B,C=FR';
const C = 'CN=mx.c.fr,OU=3,O=OP C,C=FR';
const SHA1 = '1'.repeat(64);
const SHA2 = '2'.repeat(64);

describe('diffIndexes', () => {
  const before = buildIndex(
    [
      ['keep.fr', A],
      ['gone.fr', B],
      ['moves.fr', A],
      ['gains.fr', A],
      ['two.fr', A],
      ['two.fr', B],
    ],
    '2026-04-19T00:00:00Z',
    SHA1,
  );
  const after = buildIndex(
    [
      ['keep.fr', A_OPENSSL], // respelled: not a move
      ['moves.fr', C],
      ['gains.fr', A],
      ['gains.fr', C],
      ['two.fr', B],
      ['two.fr', A],
      ['new.fr', C],
    ],
    '2026-04-20T00:00:00Z',
    SHA2,
  );

  it('names each kind exactly, sorted, DNs in their normalised display form', () => {
    const diff = diffIndexes(before, after);
    assert.deepEqual(diff.added, ['new.fr']);
    assert.deepEqual(diff.removed, ['gone.fr']);
    assert.deepEqual(
      diff.rebound.map((r) => r.domain),
      ['gains.fr', 'moves.fr'],
    );
    const moves = diff.rebound.find((r) => r.domain === 'moves.fr')!;
    assert.deepEqual(moves.from, ['CN=mx.a.fr,OU=1,O=op a,C=fr']);
    assert.deepEqual(moves.to, ['CN=mx.c.fr,OU=3,O=op c,C=fr']);
    const gains = diff.rebound.find((r) => r.domain === 'gains.fr')!;
    assert.deepEqual(gains.to, ['CN=mx.a.fr,OU=1,O=op a,C=fr', 'CN=mx.c.fr,OU=3,O=op c,C=fr']);
    // B still serves two.fr: only C is a new identity, none is gone.
    assert.deepEqual(diff.operatorsAdded, ['CN=mx.c.fr,OU=3,O=op c,C=fr']);
    assert.deepEqual(diff.operatorsRemoved, []);
    assert.deepEqual(changeCounts(diff), { added: 1, removed: 1, rebound: 2 });
    assert.equal(percentOf(diff.rebound.length, before), 40);
  });

  it('is empty between an index and itself, and mirrors when the lists are swapped', () => {
    assert.deepEqual(diffIndexes(before, before), {
      added: [],
      removed: [],
      rebound: [],
      operatorsAdded: [],
      operatorsRemoved: [],
    });
    const back = diffIndexes(after, before);
    assert.deepEqual(back.added, ['gone.fr']);
    assert.deepEqual(back.removed, ['new.fr']);
    assert.deepEqual(back.operatorsRemoved, ['CN=mx.c.fr,OU=3,O=op c,C=fr']);
  });

  it('a change names both lists by sha256 and generation date', () => {
    const change = listChange(before, after, '2026-04-20T03:00:00.000Z');
    assert.deepEqual(change.from, { sha256: SHA1, generatedAt: '2026-04-19T00:00:00Z' });
    assert.deepEqual(change.to, { sha256: SHA2, generatedAt: '2026-04-20T00:00:00Z' });
    assert.equal(change.appliedAt, '2026-04-20T03:00:00.000Z');
    assert.throws(() => listChange(buildIndex([['x.fr', A]]), after, null), /sha256/);
  });
});
