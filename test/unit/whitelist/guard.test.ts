import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { guardList, MAX_FUTURE_SKEW_MS } from '../../../src/whitelist/guard.js';
import type { PreparedList } from '../../../src/whitelist/prepare.js';
import { validateEntries } from '../../../src/whitelist/validate.js';
import { buildIndex, rawEntry } from '../../support/index-builder.js';

const DN = 'CN=mx.op1.fr,OU=1,O=OP1,C=FR';
const NOW = Date.parse('2026-06-01T00:00:00Z');
const domains = (n: number): Array<readonly [string, string]> =>
  Array.from({ length: n }, (_, i) => [`d${i}.mssante.fr`, DN] as const);

function prepared(pairs: ReadonlyArray<readonly [string, string]>, generatedAt: string, sha256: string): PreparedList {
  const { entries, rejected } = validateEntries(pairs.map(([nom, dn], i) => rawEntry(i, nom, dn)));
  return {
    sha256,
    bytes: 0,
    generatedAt,
    signature: { verified: false, why: 'test' },
    rawEntryCount: pairs.length,
    entries,
    rejected,
  };
}

const current = { index: buildIndex(domains(100), '2026-05-01T00:00:00Z'), sha256: 'a'.repeat(64) };

describe('guardList', () => {
  it('accepts a newer list that drops at most --max-shrink % of the domains', () => {
    const v = guardList(current, prepared(domains(90), '2026-05-02T00:00:00Z', 'b'.repeat(64)), 10, new Set(), NOW);
    assert.deepEqual(v, { verdict: 'accept', dropped: 10, added: 0 });
  });

  it('refuses a list dropping more, unless that very list was accepted', () => {
    const list = prepared(domains(89), '2026-05-02T00:00:00Z', 'c'.repeat(64));
    const v = guardList(current, list, 10, new Set(), NOW);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_shrink');
    assert.equal(guardList(current, list, 10, new Set(['c'.repeat(64)]), NOW).verdict, 'accept');
    assert.equal(guardList(current, list, 11, new Set(), NOW).verdict, 'accept');
  });

  it('refuses an older list (replay), and calls the same sha256 unchanged', () => {
    const older = guardList(current, prepared(domains(100), '2026-04-30T23:59:59Z', 'd'.repeat(64)), 10, new Set(), NOW);
    assert.equal(older.verdict === 'refuse' && older.reason, 'list_older');
    assert.deepEqual(guardList(current, prepared(domains(100), '2026-05-01T00:00:00Z', 'a'.repeat(64)), 10, new Set(), NOW), {
      verdict: 'unchanged',
    });
  });

  it('refuses a list dated more than a day ahead of the clock, even with nothing in force', () => {
    const ahead = new Date(NOW + MAX_FUTURE_SKEW_MS + 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const v = guardList(null, prepared(domains(5), ahead, 'e'.repeat(64)), 10, new Set(), NOW);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_from_future');
    const hoursAhead = new Date(NOW + 3 * 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    assert.equal(guardList(null, prepared(domains(5), hoursAhead, 'f'.repeat(64)), 10, new Set(), NOW).verdict, 'accept');
  });

  it('with nothing in force, refuses a list older than --max-list-age (list_too_old) unless accepted; 0 disables', () => {
    const old = prepared(domains(5), '2026-05-01T23:59:59Z', '1'.repeat(64)); // 30 days and 1 s before NOW
    const v = guardList(null, old, 10, new Set(), NOW, 30);
    assert.equal(v.verdict === 'refuse' && v.reason, 'list_too_old');
    assert.match(v.verdict === 'refuse' ? v.detail : '', /30 days old \(--max-list-age 30\).*check FILE --accept/);
    assert.equal(guardList(null, old, 10, new Set(['1'.repeat(64)]), NOW, 30).verdict, 'accept');
    assert.equal(guardList(null, old, 10, new Set(), NOW, 0).verdict, 'accept');
    assert.equal(guardList(null, old, 10, new Set(), NOW, 31).verdict, 'accept');
    const limit = prepared(domains(5), '2026-05-02T00:00:00Z', '2'.repeat(64)); // exactly 30 days
    assert.equal(guardList(null, limit, 10, new Set(), NOW, 30).verdict, 'accept');
  });

  it('a list in force that ages is not judged on age: a newer one replaces it whatever its age', () => {
    const aged = { index: buildIndex(domains(100), '2025-01-01T00:00:00Z'), sha256: '3'.repeat(64) };
    assert.equal(
      guardList(aged, prepared(domains(100), '2025-02-01T00:00:00Z', '4'.repeat(64)), 10, new Set(), NOW, 30).verdict,
      'accept',
    );
  });
});
