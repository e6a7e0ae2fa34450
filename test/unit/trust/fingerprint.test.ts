import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { certFingerprints, isCanonicalFingerprint, parseFingerprint } from '../../../src/trust/fingerprint.js';
import { fingerprintsFromRequest } from '../../../src/frontends/policy/facts.js';
import { fingerprintsFromMacros } from '../../../src/frontends/milter/macros.js';

const SHA256_COLON = '3B:1F:09:9A:47:C2:6E:8D:55:10:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45';
const SHA256_CANONICAL = `sha256:${SHA256_COLON}`;

describe('parseFingerprint', () => {
  test('Postfix colon form, any case, every digest length; bare hex (Exim) gives the same canonical form', () => {
    assert.deepEqual(parseFingerprint(SHA256_COLON), { ok: true, fingerprint: SHA256_CANONICAL });
    assert.deepEqual(parseFingerprint(SHA256_COLON.toLowerCase()), { ok: true, fingerprint: SHA256_CANONICAL });
    assert.deepEqual(parseFingerprint(SHA256_COLON.replace(/:/g, '')), { ok: true, fingerprint: SHA256_CANONICAL });
    // xtext: a colon may come encoded as +3A, like any ccert_* value.
    assert.deepEqual(parseFingerprint(SHA256_COLON.replace(/:/g, '+3A')), { ok: true, fingerprint: SHA256_CANONICAL });
    const md5 = 'C2:9D:F4:87:71:73:73:D9:18:E7:C2:F3:C1:DA:6E:04';
    assert.deepEqual(parseFingerprint(md5), { ok: true, fingerprint: `md5:${md5}` });
    for (const [bytes, name] of [
      [20, 'sha1'],
      [48, 'sha384'],
      [64, 'sha512'],
    ] as const) {
      const r = parseFingerprint('AB'.repeat(bytes));
      assert.ok(r.ok && r.fingerprint.startsWith(`${name}:AB:AB`), name);
    }
  });

  test('absent: undefined, null or empty', () => {
    for (const v of [undefined, null, '']) assert.deepEqual(parseFingerprint(v), { ok: false, reason: 'absent' });
  });

  test('malformed values are refused, never half-read', () => {
    const bad = [
      'AA:BB', // too short for any digest
      SHA256_COLON + ':', // trailing colon
      ':' + SHA256_COLON,
      SHA256_COLON.replace(':', '::'),
      SHA256_COLON.replace('3B', '3G'), // not hex
      SHA256_COLON.replace('3B:', '3B-'),
      SHA256_COLON + ' ',
      ' ' + SHA256_COLON,
      SHA256_COLON.slice(0, -3), // 31 bytes
      SHA256_COLON + ':AA', // 33 bytes
      'ABC', // odd number of digits
      SHA256_COLON.replace(/:/g, '').slice(1), // 63 digits
      SHA256_COLON.replace(/:/g, '+3B'), // an xtext escape that is not a colon
      '3B:1F:09:9A:47:C2:6E:8D:55:10:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45\nx=1',
      'A'.repeat(100_000),
      'sha256:' + SHA256_COLON, // our canonical form is not an MTA's
    ];
    for (const v of bad)
      assert.deepEqual(parseFingerprint(v), { ok: false, reason: 'malformed' }, JSON.stringify(v.slice(0, 60)));
  });

  test('an attribute bound to one digest refuses the others (Exim sends SHA-256 only)', () => {
    assert.deepEqual(parseFingerprint('AB'.repeat(16), 'sha256'), { ok: false, reason: 'malformed' });
    assert.equal(parseFingerprint('AB'.repeat(32), 'sha256').ok, true);
  });

  test('random input never throws, and whatever parses is canonical', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (s) => {
        const r = parseFingerprint(s);
        if (r.ok) assert.ok(isCanonicalFingerprint(r.fingerprint), r.fingerprint);
      }),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 64 }), fc.boolean(), (bytes, colons) => {
        const hex = Buffer.from(bytes).toString('hex');
        const text = colons ? hex.replace(/(..)(?!$)/g, '$1:') : hex;
        const r = parseFingerprint(text);
        assert.equal(r.ok, [16, 20, 32, 48, 64].includes(bytes.length));
        if (r.ok) assert.equal(r.fingerprint.split(':').slice(1).join('').toLowerCase(), hex);
      }),
    );
  });
});

describe('the uppercase colon form (Postfix, every request)', () => {
  /** The form checked character by character, as it was before the regexp: the reference. */
  function upperColon(value: string): boolean {
    if ((value.length + 1) % 3 !== 0 || ![16, 20, 32, 48, 64].includes((value.length + 1) / 3)) return false;
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      if (i % 3 === 2 ? c !== 0x3a : !((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46))) return false;
    }
    return true;
  }

  test('is read as it is, and a value one character away from it is not taken for it', () => {
    const alphabet = '0123456789ABCDEFabcdefG:+ \n\u00c9\ud83d';
    fc.assert(
      fc.property(
        fc.constantFrom(16, 20, 32, 48, 64),
        fc.uint8Array({ minLength: 64, maxLength: 64 }),
        fc.nat(),
        fc.constantFrom(...alphabet),
        fc.constantFrom('replace', 'insert', 'delete', 'none'),
        (bytes, random, at, ch, edit) => {
          const exact = Buffer.from(random.subarray(0, bytes))
            .toString('hex')
            .toUpperCase()
            .replace(/(..)(?!$)/g, '$1:');
          const i = at % exact.length;
          const value =
            edit === 'replace'
              ? exact.slice(0, i) + ch + exact.slice(i + 1)
              : edit === 'insert'
                ? exact.slice(0, i) + ch + exact.slice(i)
                : edit === 'delete'
                  ? exact.slice(0, i) + exact.slice(i + 1)
                  : exact;
          // As the codec hands it over: a slice of a larger string.
          const sliced = ` ${value} `.slice(1, -1);
          const r = parseFingerprint(sliced);
          if (upperColon(value))
            assert.deepEqual(r, {
              ok: true,
              fingerprint: `${['md5', 'sha1', 'sha256', 'sha384', 'sha512'][[16, 20, 32, 48, 64].indexOf((value.length + 1) / 3)]}:${value}`,
            });
          else if (r.ok) assert.ok(isCanonicalFingerprint(r.fingerprint), r.fingerprint);
        },
      ),
      { numRuns: 5000 },
    );
  });
});

describe('isCanonicalFingerprint (what peers.json may hold)', () => {
  test('only the exact canonical form with a digest name matching its length', () => {
    assert.equal(isCanonicalFingerprint(SHA256_CANONICAL), true);
    assert.equal(isCanonicalFingerprint(`md5:${SHA256_COLON}`), false);
    assert.equal(isCanonicalFingerprint(SHA256_CANONICAL.toLowerCase()), false);
    assert.equal(isCanonicalFingerprint(SHA256_COLON), false);
    assert.equal(isCanonicalFingerprint(42), false);
    assert.equal(isCanonicalFingerprint(`sha256:${SHA256_COLON}:`), false);
  });
});

describe('fingerprints from each MTA', () => {
  test('Postfix policy: both attributes; a malformed one is ignored and counted, the other kept', () => {
    const pubkey = '68:B3:29:DA:98:93:E3:40:99:C7:D8:AD:5C:B9:C9:40:68:B3:29:DA:98:93:E3:40:99:C7:D8:AD:5C:B9:C9:40';
    assert.deepEqual(
      fingerprintsFromRequest(
        new Map([
          ['ccert_fingerprint', SHA256_COLON],
          ['ccert_pubkey_fingerprint', pubkey],
        ]),
      ),
      { cert: SHA256_CANONICAL, pubkey: `sha256:${pubkey}`, malformed: 0 },
    );
    assert.deepEqual(
      fingerprintsFromRequest(
        new Map([
          ['ccert_fingerprint', 'not-a-digest'],
          ['ccert_pubkey_fingerprint', pubkey],
        ]),
      ),
      { cert: null, pubkey: `sha256:${pubkey}`, malformed: 1 },
    );
    assert.equal(fingerprintsFromRequest(new Map([['ccert_fingerprint', '']])), null);
    assert.equal(fingerprintsFromRequest(new Map()), null);
  });

  test('Exim: x_ccert_fingerprint (SHA-256 only) wins over Postfix attributes', () => {
    const hex = SHA256_COLON.replace(/:/g, '');
    assert.deepEqual(
      fingerprintsFromRequest(
        new Map([
          ['x_ccert_fingerprint', hex],
          ['ccert_fingerprint', 'C2:9D:F4:87:71:73:73:D9:18:E7:C2:F3:C1:DA:6E:04'],
        ]),
      ),
      { cert: SHA256_CANONICAL, pubkey: null, malformed: 0 },
    );
    assert.deepEqual(fingerprintsFromRequest(new Map([['x_ccert_fingerprint', 'AB'.repeat(16)]])), {
      cert: null,
      pubkey: null,
      malformed: 1,
    });
  });

  test('Sendmail Milter: {cert_fp} first, else {cert_md5}; Postfix macros carry none', () => {
    const md5 = 'C2:9D:F4:87:71:73:73:D9:18:E7:C2:F3:C1:DA:6E:04';
    assert.deepEqual(fingerprintsFromMacros(new Map([['{cert_md5}', md5]])), { cert: `md5:${md5}`, pubkey: null, malformed: 0 });
    assert.deepEqual(
      fingerprintsFromMacros(
        new Map([
          ['{cert_md5}', md5],
          ['{cert_fp}', SHA256_COLON],
        ]),
      ),
      { cert: SHA256_CANONICAL, pubkey: null, malformed: 0 },
    );
    assert.equal(fingerprintsFromMacros(new Map([['{cert_subject}', 'mx.op1.fr']])), null);
  });

  test('certFingerprints: null only when nothing was given', () => {
    assert.equal(certFingerprints(undefined, ''), null);
    assert.deepEqual(certFingerprints('x', 'y'), { cert: null, pubkey: null, malformed: 2 });
  });
});
