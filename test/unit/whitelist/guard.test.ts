import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guardList, MAX_FUTURE_SKEW_MS, type GuardInput, type GuardLimits } from '../../../src/whitelist/guard.js';
import { buildIndex } from '../../support/index-builder.js';

const DN = 'CN=mx.op1.fr,OU=1,O=OP1,C=FR';
const NOW = Date.parse('2026-06-01T00:00:00Z');
const domains = (n: number): Array<readonly [string, string]> =>
  Array.from({ length: n }, (_, i) => [`d${i}.mssante.fr`, DN] as const);

/** A verified list as the guard sees it: its index and its sha256. */
function prepared(pairs: ReadonlyArray<readonly [string, string]>, generatedAt: string, sha256: string): GuardInput {
  return { index: buildIndex(pairs, generatedAt, sha256), sha256 };
}

/** The daemon's defaults (--max-shrink 10, --max-rebind 10), age not judged unless given. */
const limits = (maxShrinkPercent = 10, maxListAgeDays = 0, maxRebindPercent = 10): GuardLimits => ({
  maxShrinkPercent,
  maxRebindPercent,
  maxListAgeDays,
});

const current = prepared(domains(100), '2026-05-01T00:00:00Z', 'a'.repeat(64));

describe('guardList', () => {
  it('accepts a newer list that drops at most --max-shrink % of the domains', () => {
    const v = guardList(current, prepared(domains(90), '2026-05-02T00:00:00Z', 'b'.repeat(64)), limits(10), new Set(), NOW);
    assert.equal(v.verdict, 'accept');
    assert.deepEqual(v.verdict === 'accept' && [v.dropped, v.added, v.rebound], [10, 0, 0]);
    assert.deepEqual(
      v.verdict === 'accept' && v.change?.removed,
      Array.from({ length: 10 }, (_, i) => `d${90 + i}.mssante.fr`).sort(),
    );
  });

  it('refuses a list dropping more, unless that very list was accepted', () => {
    const list = prepared(domains(89), '2026-05-02T00:00:00Z', 'c'.repeat(64));
    const v = guardList(current, list, limits(10), new Set(), NOW);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_shrink');
    assert.equal(guardList(current, list, limits(10), new Set(['c'.repeat(64)]), NOW).verdict, 'accept');
    assert.equal(guardList(current, list, limits(11), new Set(), NOW).verdict, 'accept');
  });

  it('refuses an older list (replay), and calls the same sha256 unchanged', () => {
    const older = guardList(current, prepared(domains(100), '2026-04-30T23:59:59Z', 'd'.repeat(64)), limits(10), new Set(), NOW);
    assert.equal(older.verdict === 'refuse' && older.reason, 'list_older');
    assert.deepEqual(
      guardList(current, prepared(domains(100), '2026-05-01T00:00:00Z', 'a'.repeat(64)), limits(10), new Set(), NOW),
      {
        verdict: 'unchanged',
      },
    );
  });

  it('refuses a list dated more than a day ahead of the clock, even with nothing in force', () => {
    const ahead = new Date(NOW + MAX_FUTURE_SKEW_MS + 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const v = guardList(null, prepared(domains(5), ahead, 'e'.repeat(64)), limits(10), new Set(), NOW);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_from_future');
    const hoursAhead = new Date(NOW + 3 * 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    assert.equal(guardList(null, prepared(domains(5), hoursAhead, 'f'.repeat(64)), limits(10), new Set(), NOW).verdict, 'accept');
  });

  it('with nothing in force, refuses a list older than --max-list-age (list_too_old) unless accepted; 0 disables', () => {
    const old = prepared(domains(5), '2026-05-01T23:59:59Z', '1'.repeat(64)); // 30 days and 1 s before NOW
    const v = guardList(null, old, limits(10, 30), new Set(), NOW);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_too_old');
    assert.match(v.verdict === 'refuse' ? v.detail : '', /30 days old \(--max-list-age 30\).*check FILE --accept/);
    assert.equal(guardList(null, old, limits(10, 30), new Set(['1'.repeat(64)]), NOW).verdict, 'accept');
    assert.equal(guardList(null, old, limits(10, 0), new Set(), NOW).verdict, 'accept');
    assert.equal(guardList(null, old, limits(10, 31), new Set(), NOW).verdict, 'accept');
    const limit = prepared(domains(5), '2026-05-02T00:00:00Z', '2'.repeat(64)); // exactly 30 days
    assert.equal(guardList(null, limit, limits(10, 30), new Set(), NOW).verdict, 'accept');
  });

  it('a list in force that ages is not judged on age: a newer one replaces it whatever its age', () => {
    const aged = prepared(domains(100), '2025-01-01T00:00:00Z', '3'.repeat(64));
    assert.equal(
      guardList(aged, prepared(domains(100), '2025-02-01T00:00:00Z', '4'.repeat(64)), limits(10, 30), new Set(), NOW).verdict,
      'accept',
    );
  });

  it('refuses a list moving more than --max-rebind % of the domains onto other certificates (list_rebind), unless accepted', () => {
    const OTHER = 'CN=mx.op2.fr,OU=2,O=OP2,C=FR';
    const moved = (n: number): Array<readonly [string, string]> =>
      domains(100).map(([d, dn], i) => [d, i < n ? OTHER : dn] as const);
    const eleven = prepared(moved(11), '2026-05-02T00:00:00Z', '5'.repeat(64));
    const v = guardList(current, eleven, limits(), new Set(), NOW);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_rebind');
    assert.match(
      v.verdict === 'refuse' ? v.detail : '',
      /move 11 of 100 domains .*11\.0 % > --max-rebind 10 %.*check FILE --accept/,
    );
    assert.equal(v.verdict === 'refuse' && v.change?.rebound.length, 11);
    assert.equal(guardList(current, eleven, limits(), new Set(['5'.repeat(64)]), NOW).verdict, 'accept');
    assert.equal(guardList(current, eleven, limits(10, 0, 11), new Set(), NOW).verdict, 'accept');
    const ten = guardList(current, prepared(moved(10), '2026-05-02T00:00:00Z', '6'.repeat(64)), limits(), new Set(), NOW);
    assert.deepEqual(ten.verdict === 'accept' && [ten.rebound, ten.change?.rebound[0]?.to], [
      10,
      ['CN=mx.op2.fr,OU=2,O=op2,C=fr'],
    ]);
  });

  it('a DN spelled another way (OpenSSL one-line, spaces, case of attribute types) moves nothing', () => {
    const respelled = domains(100).map(
      ([d], i) => [d, i % 2 === 0 ? '/C=FR/O=OP1/OU=1/CN=mx.op1.fr' : 'cn=mx.op1.fr, ou=1, o=OP1, c=FR'] as const,
    );
    const v = guardList(current, prepared(respelled, '2026-05-02T00:00:00Z', '7'.repeat(64)), limits(0, 0, 0), new Set(), NOW);
    assert.equal(v.verdict, 'accept');
    assert.deepEqual(v.verdict === 'accept' && v.change, {
      added: [],
      removed: [],
      rebound: [],
      operatorsAdded: [],
      operatorsRemoved: [],
    });
  });
});
