import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { normaliseDomain } from '../../../src/trust/domain.js';

describe('normaliseDomain', () => {
  it('folds case and a final dot to a lower-case A-label', () => {
    assert.equal(normaliseDomain('OP1.MSSante.fr.'), 'op1.mssante.fr');
    assert.equal(normaliseDomain('  op1.mssante.fr '), 'op1.mssante.fr');
    assert.equal(normaliseDomain('Hôpital-Démo.mssante.fr'), 'xn--hpital-dmo-i7a8j.mssante.fr');
  });

  it('refuses what is not a host name of two labels or more', () => {
    for (const bad of [
      '',
      '.',
      'localhost',
      'fr',
      '192.0.2.1',
      'op1 mssante.fr',
      '-op1.mssante.fr',
      'op1-.mssante.fr',
      'op1..mssante.fr',
      `${'a'.repeat(64)}.mssante.fr`,
      `${'a.'.repeat(127)}fr`,
    ]) {
      assert.equal(normaliseDomain(bad), null, JSON.stringify(bad));
    }
  });
});
