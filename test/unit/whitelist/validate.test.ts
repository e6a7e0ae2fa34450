import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { validateEntries, validateEntry } from '../../../src/whitelist/validate.js';
import { parseListXml } from '../../../src/whitelist/xml.js';
import { realListOrSkip } from '../../support/fixtures.js';
import { rawEntry } from '../../support/index-builder.js';

const DN = 'CN=mx.op1.fr,OU=318310021300028,O=GIP OP1,ST=Paris (75),C=FR';

describe('validateEntry', () => {
  const rejected: Array<[string, string, string]> = [
    ['_', '_', 'field_placeholder'],
    ['op1.mssante.fr', '_', 'field_placeholder'],
    ['', DN, 'field_empty'],
    ['op1.mssante.fr', '', 'field_empty'],
    ['op1 mssante.fr', DN, 'domain_invalid'],
    ['-op1.mssante.fr', DN, 'domain_invalid'],
    ['localhost', DN, 'domain_invalid'],
    ['192.0.2.1', DN, 'domain_invalid'],
    [`${'a'.repeat(64)}.mssante.fr`, DN, 'domain_invalid'],
    ['op1.mssante.fr', 'OU=318310021300028,O=GIP OP1,C=FR', 'dn_without_cn'],
    ['op1.mssante.fr', 'not a distinguished name', 'dn_invalid'],
  ];
  for (const [nom, dn, reason] of rejected) {
    it(`skips ${JSON.stringify(nom)} / ${JSON.stringify(dn.slice(0, 30))} as ${reason}`, () => {
      const result = validateEntry(rawEntry(7, nom, dn));
      assert.equal(result.ok, false);
      if (!result.ok) {
        assert.equal(result.rejected.reason, reason);
        assert.equal(result.rejected.index, 7);
      }
    });
  }

  it('keeps the good entries around the 2020-10-07 junk', () => {
    const { entries, rejected: bad } = validateEntries([
      rawEntry(0, 'a.mssante.fr', DN),
      rawEntry(1, '_', '_'),
      rawEntry(2, '_', '_'),
      rawEntry(3, '_', '_'),
      rawEntry(4, 'b.mssante.fr', DN),
    ]);
    assert.deepEqual(
      entries.map((e) => e.domain),
      ['a.mssante.fr', 'b.mssante.fr'],
    );
    assert.deepEqual(
      bad.map((r) => r.index),
      [1, 2, 3],
    );
  });

  it('normalises domains to lower-case A-labels and keeps the U-label for reports', () => {
    const result = validateEntry(rawEntry(0, 'Hôpital-Démo.mssante.fr', DN));
    assert.ok(result.ok);
    assert.equal(result.entry.domain, 'xn--hpital-dmo-i7a8j.mssante.fr');
    assert.equal(result.entry.domainUnicode, 'hôpital-démo.mssante.fr');
  });

  it('accepts every entry of the real list', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const parsed = parseListXml(readFileSync(real.list, 'utf8'));
    assert.ok(parsed.ok);
    const { entries, rejected: bad } = validateEntries(parsed.list.entries);
    assert.equal(bad.length, 0, JSON.stringify(bad.slice(0, 3)));
    assert.equal(entries.length, 6494);
    assert.equal(new Set(entries.map((e) => e.domain)).size, 4944);
    const rawDns = new Set(entries.map((e) => e.dnRaw));
    const keys = new Set(entries.map((e) => e.dnKey));
    assert.equal(rawDns.size, 391);
    assert.ok(keys.size < rawDns.size, 'spelling variants of one DN collapse into one key');
  });
});
