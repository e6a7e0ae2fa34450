import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactLocation, redactLocations } from '../../../src/whitelist/shown-location.js';

describe('redactLocation: what a source URL may show', () => {
  const cases: Array<[string, string]> = [
    ['https://listeblanche.example/liste.xml', 'https://listeblanche.example/liste.xml'],
    ['https://listeblanche.example/liste.xml?token=S3CRET', 'https://listeblanche.example/liste.xml?***'],
    ['https://listeblanche.example/liste.xml#S3CRET', 'https://listeblanche.example/liste.xml#***'],
    ['https://user:S3CRET@listeblanche.example:8443/l.xml', 'https://***@listeblanche.example:8443/l.xml'],
    ['https://a:b@c@listeblanche.example/?k=S3CRET#S3CRET', 'https://***@listeblanche.example/?***#***'],
    ['https://listeblanche.example?k=S3CRET', 'https://listeblanche.example?***'],
    ['https://S3CRET@listeblanche.example', 'https://***@listeblanche.example'],
    ['https://listeblanche.example/a#b?S3CRET', 'https://listeblanche.example/a#***'],
    // Not valid URLs (refused at start-up), shown redacted all the same.
    ['https://user:S3CRET@[bad/x?y', 'https://***@[bad/x?***'],
    ['http://h/x?S3CRET', 'http://h/x?***'],
    ['file:///srv/liste.xml?S3CRET', 'file:///srv/liste.xml?***'],
    // File paths are shown as they are.
    ['/srv/mssante/liste.xml', '/srv/mssante/liste.xml'],
    ['./liste?.xml', './liste?.xml'],
    ['C:\\liste.xml', 'C:\\liste.xml'],
    ['demo', 'demo'],
  ];
  for (const [input, shown] of cases) {
    it(`${JSON.stringify(input)} → ${JSON.stringify(shown)}`, () => {
      assert.equal(redactLocation(input), shown);
      assert.ok(!redactLocation(input).includes('S3CRET') || !/^[a-z]{2,}:/i.test(input));
    });
  }

  it('redacts one location or a list of them (the whitelist setting as printed)', () => {
    assert.equal(redactLocations('https://h/x?S3CRET'), 'https://h/x?***');
    assert.deepEqual(redactLocations(['https://h/x?S3CRET', '/srv/l.xml']), ['https://h/x?***', '/srv/l.xml']);
    assert.equal(redactLocations(null), null);
  });
});
