import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import {
  MAX_DN_LENGTH,
  decodeOpensslEscapes,
  decodeXtext,
  formatDn,
  normaliseCn,
  normaliseValue,
  parseDn,
  parseDnCached,
  type Dn,
} from '../../../src/trust/dn.js';
import { TestPki } from '../../support/pki.js';
import { REAL_LIST } from '../../support/fixtures.js';
import { toolOrSkip } from '../../support/tools.js';

function dnOf(text: string): Dn {
  const r = parseDn(text);
  assert.ok(r.ok, `expected ${JSON.stringify(text)} to parse, got ${r.ok ? '' : r.error}`);
  return r.dn;
}
const keyOf = (text: string): string => dnOf(text).key;

type Pairs = ReadonlyArray<readonly [string, string]>;

/** RFC 4514 rendering, as GnuTLS / OpenSSL RFC2253 with UTF-8 kept. */
function rfc4514(rdns: Pairs): string {
  return rdns
    .map(([t, v]) => {
      let out = '';
      const chars = [...v];
      chars.forEach((ch, i) => {
        const c = ch.codePointAt(0)!;
        if (c < 0x20 || c === 0x7f) out += [...Buffer.from(ch)].map((b) => `\\${b.toString(16).padStart(2, '0')}`).join('');
        else if (',+"\\<>;'.includes(ch) || (i === 0 && (ch === ' ' || ch === '#')) || (i === chars.length - 1 && ch === ' '))
          out += `\\${ch}`;
        else out += ch;
      });
      return `${t}=${out}`;
    })
    .join(',');
}

/** OpenSSL X509_NAME_oneline: bytes outside 0x20..0x7e as \xHH; OpenSSL 3 escapes '/' and '+'. */
function opensslSlash(rdns: Pairs, escapeSeparators = true): string {
  return rdns
    .map(([t, v]) => {
      let out = '';
      for (const b of Buffer.from(v, 'utf8')) {
        if (b < 0x20 || b > 0x7e) out += `\\x${b.toString(16).toUpperCase().padStart(2, '0')}`;
        else if (escapeSeparators && (b === 0x2f || b === 0x2b)) out += `\\${String.fromCharCode(b)}`;
        else out += String.fromCharCode(b);
      }
      return `/${t}=${out}`;
    })
    .join('');
}

/** Sendmail's xtextify(buf, "<>\")") applied to {cert_subject}. */
function sendmailXtext(s: string): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const ch = String.fromCharCode(b);
    out += b < 0x21 || b > 0x7e || '+\\(<>")'.includes(ch) ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : ch;
  }
  return out;
}

const reversed = (p: Pairs): Pairs => [...p].reverse();

describe('list spelling variants (docs/mssante-rules.md §3) compared with the clean spelling', () => {
  const CADILLAC = 'CN=mss.ch-cadillac.fr,OU=1330781295,O=C.H. DE CADILLAC,ST=Gironde (33),C=FR';
  const rows: ReadonlyArray<{ readonly name: string; readonly variant: string; readonly clean: string; readonly same: boolean }> =
    [
      {
        name: 'spaces after the separators',
        variant: 'CN=mailin.interop-mssante.apicrypt.org, OU=343975235300037, O=APICEM, ST=Nord (59), C=FR',
        clean: 'CN=mailin.interop-mssante.apicrypt.org,OU=343975235300037,O=APICEM,ST=Nord (59),C=FR',
        same: true,
      },
      {
        name: 'spaces around = and before separators',
        variant: 'CN = mss.ch-cadillac.fr , OU = 1330781295 , O = C.H. DE CADILLAC , ST = Gironde (33) , C = FR',
        clean: CADILLAC,
        same: true,
      },
      {
        name: 'trailing space inside a value',
        variant: 'CN=mssante.clinique-sainthilaire.fr,OU=1760780619,O=CLINIQUE SAINT-HILAIRE ,ST=Seine-Maritime (76),C=FR',
        clean: 'CN=mssante.clinique-sainthilaire.fr,OU=1760780619,O=CLINIQUE SAINT-HILAIRE,ST=Seine-Maritime (76),C=FR',
        same: true,
      },
      {
        name: 'trailing space inside the CN',
        variant: 'CN=smtp-1.mssante.adista.fr ,OU=332315971500305,O=ADISTA,ST=Meurthe et Moselle (54),C=FR',
        clean: 'CN=smtp-1.mssante.adista.fr,OU=332315971500305,O=ADISTA,ST=Meurthe et Moselle (54),C=FR',
        same: true,
      },
      {
        name: 'Paris(75) vs Paris (75)',
        variant: 'CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris(75),C=FR',
        clean: 'CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR',
        same: true,
      },
      {
        name: 'spaces inside the parentheses',
        variant: 'CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris ( 75 ),C=FR',
        clean: 'CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR',
        same: true,
      },
      {
        name: 'RFC 1779 quoted value with a double space',
        variant: 'CN=mss.ch-cadillac.fr,OU=1330781295,O="C.H. DE  CADILLAC",ST=Gironde (33),C=FR',
        clean: CADILLAC,
        same: true,
      },
      {
        name: 'unquoted double space',
        variant: 'CN=mss.ch-cadillac.fr,OU=1330781295,O=C.H. DE  CADILLAC,ST=Gironde (33),C=FR',
        clean: CADILLAC,
        same: true,
      },
      {
        name: 'run of three spaces',
        variant: 'CN=mss.ch-orthez.fr,OU=1640780813,O=CENTRE HOSPITALIER   ORTHEZ,ST=Pyrénées-Atlantiques (64),C=FR',
        clean: 'CN=mss.ch-orthez.fr,OU=1640780813,O=CENTRE HOSPITALIER ORTHEZ,ST=Pyrénées-Atlantiques (64),C=FR',
        same: true,
      },
      {
        name: 'U+00A0 followed by a space, quoted',
        variant: 'CN=scytale.curie.fr,OU=1750160012,O="CLCC\u00a0 INSTITUT CURIE",ST=Paris (75),C=FR',
        clean: 'CN=scytale.curie.fr,OU=1750160012,O=CLCC INSTITUT CURIE,ST=Paris (75),C=FR',
        same: true,
      },
      {
        name: 'U+00A0 alone',
        variant: 'CN=mss.hlrs-lamusse.net,OU=1270000912,O=HOPITAL LA\u00a0MUSSE ST SEBASTIEN/MORSENT,ST=Eure (27),C=FR',
        clean: 'CN=mss.hlrs-lamusse.net,OU=1270000912,O=HOPITAL LA MUSSE ST SEBASTIEN/MORSENT,ST=Eure (27),C=FR',
        same: true,
      },
      {
        name: 'bare embedded quotes vs the RFC 4514 escaped quotes GnuTLS writes',
        variant: 'CN=mssante.ch-ouestguyane.fr,OU=1970300083,O=CENTRE HOSPITALIER "FRANCK-JOLY",ST=Guyane (973),C=FR',
        clean: 'CN=mssante.ch-ouestguyane.fr,OU=1970300083,O=CENTRE HOSPITALIER \\"FRANCK-JOLY\\",ST=Guyane (973),C=FR',
        same: true,
      },
      {
        // Embedded quotes are part of the value (only one surrounding pair is syntax): the list holds
        // both spellings for the same domain, as two certificates.
        name: 'bare embedded quotes vs the same words without quotes',
        variant: 'CN=mssante.ch-ouestguyane.fr,OU=1970300083,O=CENTRE HOSPITALIER "FRANCK-JOLY",ST=Guyane (973),C=FR',
        clean: 'CN=mssante.ch-ouestguyane.fr,OU=1970300083,O="CENTRE HOSPITALIER  FRANCK-JOLY",ST=Guyane (973),C=FR',
        same: false,
      },
      {
        name: 'comma inside RFC 1779 quotes',
        variant: 'CN=h.example.fr,O="CH DE PAU, SITE 2",C=FR',
        clean: 'CN=h.example.fr,O=CH DE PAU\\, SITE 2,C=FR',
        same: true,
      },
      {
        name: 'comma inside bare embedded quotes',
        variant: 'CN=h.example.fr,O=CH "PAU, SITE 2",C=FR',
        clean: 'CN=h.example.fr,O=CH \\"PAU\\, SITE 2\\",C=FR',
        same: true,
      },
      {
        // L and ST are different attributes: the certificate carries one of them, the MTA shows which.
        name: 'L= instead of ST=',
        variant: 'CN=cert-expire-audit.espacedeconfiance.mssante.fr,OU=300000000099622,O=GIP - TEST9962,L=Paris (75),C=FR',
        clean: 'CN=cert-expire-audit.espacedeconfiance.mssante.fr,OU=300000000099622,O=GIP - TEST9962,ST=Paris (75),C=FR',
        same: false,
      },
      {
        name: 'letter case of types and values',
        variant: 'cn=MSS.CH-Cadillac.FR,ou=1330781295,o=c.h. de cadillac,st=GIRONDE (33),c=fr',
        clean: CADILLAC,
        same: true,
      },
      {
        name: 'long type names and OIDs',
        variant:
          'commonName=mss.ch-cadillac.fr,organizationalUnitName=1330781295,2.5.4.10=C.H. DE CADILLAC,stateOrProvinceName=Gironde (33),OID.2.5.4.6=FR',
        clean: CADILLAC,
        same: true,
      },
      {
        // Not a documented variant (the real list is NFC throughout): other code points, other subject.
        name: 'decomposed (NFD) vs composed accents',
        variant: 'CN=mss.ch-orthez.fr,OU=1640780813,O=CENTRE HOSPITALIER ORTHEZ,ST=Pyre\u0301ne\u0301es-Atlantiques (64),C=FR',
        clean: 'CN=mss.ch-orthez.fr,OU=1640780813,O=CENTRE HOSPITALIER ORTHEZ,ST=Pyrénées-Atlantiques (64),C=FR',
        same: false,
      },
      {
        name: 'escaped trailing space',
        variant: 'CN=mss.ch-cadillac.fr,OU=1330781295,O=C.H. DE CADILLAC\\ ,ST=Gironde (33),C=FR',
        clean: CADILLAC,
        same: true,
      },
      {
        name: 'RFC 1779 ; separators',
        variant: 'CN=mss.ch-cadillac.fr; OU=1330781295; O=C.H. DE CADILLAC; ST=Gironde (33); C=FR',
        clean: CADILLAC,
        same: true,
      },
      {
        name: 'same CN, different OU (a different certificate)',
        variant: 'CN=messagerie1.mssantepdl.fr,OU=1440050409,O=GCS E-SANTE PAYS DE LA LOIRE,ST=Loire-Atlantique (44),C=FR',
        clean: 'CN=messagerie1.mssantepdl.fr,OU=353820845500021,O=GCS E-SANTE PAYS DE LA LOIRE,ST=Loire-Atlantique (44),C=FR',
        same: false,
      },
      {
        name: 'same CN, different O (a different certificate)',
        variant: 'CN=mss.esante-martinique.fr,OU=1970210829,O=GRADES MARTINIQUE,ST=Martinique (972),C=FR',
        clean: 'CN=mss.esante-martinique.fr,OU=1970210829,O=GCS SYST INF SANTE DE MART (ET SIEGE),ST=Martinique (972),C=FR',
        same: false,
      },
      {
        name: 'one RDN missing',
        variant: 'CN=mss.ch-cadillac.fr,OU=1330781295,O=C.H. DE CADILLAC,C=FR',
        clean: CADILLAC,
        same: false,
      },
      { name: 'one RDN more', variant: `${CADILLAC},EMAILADDRESS=x@ch-cadillac.fr`, clean: CADILLAC, same: false },
      {
        name: 'rotated, not reversed',
        variant: 'C=FR,CN=mss.ch-cadillac.fr,OU=1330781295,O=C.H. DE CADILLAC,ST=Gironde (33)',
        clean: CADILLAC,
        same: false,
      },
      {
        name: 'one character of the CN differs',
        variant: CADILLAC.replace('cadillac.fr', 'cadi1lac.fr'),
        clean: CADILLAC,
        same: false,
      },
    ];
  for (const row of rows) {
    test(`${row.name}: ${row.same ? 'same subject' : 'different subject'}`, () => {
      const a = keyOf(row.variant);
      const b = keyOf(row.clean);
      if (row.same) assert.equal(a, b);
      else assert.notEqual(a, b);
    });
  }

  test('a bare + or ; inside a value is text, not a separator', () => {
    const dn = dnOf('CN=h.example.fr,O=SOINS+DOMICILE;NORD,C=FR');
    assert.deepEqual(
      dn.rdns.map((r) => r.map((a) => a.type)),
      [['CN'], ['O'], ['C']],
    );
    assert.equal(dn.rdns[1]![0]!.value, 'soins+domicile;nord');
  });

  test('a multi-valued RDN (+) stays one RDN, compared as a set, never flattened', () => {
    const dn = dnOf('CN=h.example.fr+SERIALNUMBER=42,O=X,C=FR');
    assert.deepEqual(dn.rdns, [
      [
        { type: 'CN', value: 'h.example.fr' },
        { type: 'SERIALNUMBER', value: '42' },
      ],
      [{ type: 'O', value: 'x' }],
      [{ type: 'C', value: 'fr' }],
    ]);
    assert.equal(dn.cn, 'h.example.fr');
    // Member order inside the set carries no meaning, in comma and slash form alike.
    assert.equal(keyOf('SERIALNUMBER=42+CN=h.example.fr,O=X,C=FR'), dn.key);
    assert.equal(keyOf('/C=FR/O=X/CN=h.example.fr+serialNumber=42'), dn.key);
    // Flattened or regrouped, it is another subject.
    assert.notEqual(keyOf('CN=h.example.fr,SERIALNUMBER=42,O=X,C=FR'), dn.key);
    assert.notEqual(keyOf('/C=FR/O=X/CN=h.example.fr/serialNumber=42'), dn.key);
    assert.notEqual(keyOf('CN=h.example.fr,SERIALNUMBER=42+O=X,C=FR'), dn.key);
    assert.equal(formatDn(dn), 'CN=h.example.fr+SERIALNUMBER=42,O=x,C=fr');
  });
});

describe('MTA renderings of one subject compare equal to the list spelling', () => {
  // Certificate order, as in the certificate.
  const SUBJECT: Pairs = [
    ['C', 'FR'],
    ['ST', 'Bouches-du-Rhône (13)'],
    ['O', 'HOPITAL LA\u00a0MUSSE "ST" SEBASTIEN/MORSENT, SITE 2'],
    ['OU', '1130786049'],
    ['CN', 'mss.hopital-exemple.fr'],
  ];
  const LIST =
    'CN=mss.hopital-exemple.fr,OU=1130786049,O="HOPITAL LA MUSSE \\"ST\\" SEBASTIEN/MORSENT, SITE 2",ST=Bouches-du-Rhône(13),C=FR';
  const rows: ReadonlyArray<readonly [string, string]> = [
    ['Exim GnuTLS, certificate order, UTF-8, \\" and \\, escapes', rfc4514(SUBJECT)],
    ['RFC 4514, CN first', rfc4514(reversed(SUBJECT))],
    ['OpenSSL 3 slash form, \\xHH and \\/', opensslSlash(SUBJECT)],
    ['OpenSSL 1.1 slash form, bare /', opensslSlash(SUBJECT, false)],
    [
      'OpenSSL -nameopt oneline',
      'C = FR, ST = Bouches-du-Rh\\C3\\B4ne (13), O = "HOPITAL LA\\C2\\A0MUSSE \\"ST\\" SEBASTIEN/MORSENT, SITE 2", OU = 1130786049, CN = mss.hopital-exemple.fr',
    ],
    [
      'OpenSSL -nameopt RFC2253 (\\HH escapes)',
      'CN=mss.hopital-exemple.fr,OU=1130786049,O=HOPITAL LA\\C2\\A0MUSSE \\"ST\\" SEBASTIEN/MORSENT\\, SITE 2,ST=Bouches-du-Rh\\C3\\B4ne (13),C=FR',
    ],
    ['Sendmail {cert_subject}: xtext over the OpenSSL slash form', decodeXtext(sendmailXtext(opensslSlash(SUBJECT)))],
  ];
  for (const [name, rendering] of rows) {
    test(name, () => {
      assert.equal(keyOf(rendering), keyOf(LIST));
    });
  }

  test('a Sendmail macro as it arrives: xtext (+5C = backslash) wrapping \\xHH', () => {
    const macro = '/C=FR/ST=Bouches-du-Rh+5CxC3+5CxB4ne+20+2813+29/O=GIP+20SESAN/OU=1750048886/CN=smtp-1.sesan.santnet.com';
    assert.equal(
      sendmailXtext('/C=FR/ST=Bouches-du-Rh\\xC3\\xB4ne (13)/O=GIP SESAN/OU=1750048886/CN=smtp-1.sesan.santnet.com'),
      macro,
    );
    const once = decodeXtext(macro);
    assert.equal(once, '/C=FR/ST=Bouches-du-Rh\\xC3\\xB4ne (13)/O=GIP SESAN/OU=1750048886/CN=smtp-1.sesan.santnet.com');
    assert.equal(keyOf(once), keyOf('CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Bouches-du-Rhône (13),C=FR'));
  });

  test('Postfix ccert_subject (CN only, xtext) compares with the list CN', () => {
    const listCn = dnOf(LIST).cn;
    assert.equal(normaliseCn(decodeXtext('MSS.Hopital-Exemple.fr')), listCn);
    assert.equal(normaliseCn(decodeXtext('mss.hopital-exemple.fr+20')), listCn);
    assert.notEqual(normaliseCn(decodeXtext('mss.hopital-exemple.fr+00.evil.example')), listCn);
  });

  test('openssl, the oracle: every -nameopt rendering of a real certificate matches the list spelling', (t: TestContext) => {
    const openssl = toolOrSkip(t, 'openssl');
    if (openssl === null) return;
    const pki = new TestPki();
    const cert = pki.issue('dn-subject', SUBJECT, null, { usage: 'tls' });
    const renderings = ['compat', 'RFC2253', 'RFC2253,-esc_msb', 'oneline', 'oneline,-esc_msb'].map((opt) => {
      const out = execFileSync(openssl, ['x509', '-in', cert.certPath, '-noout', '-subject', '-nameopt', opt], {
        encoding: 'utf8',
      });
      return out.replace(/^subject=\s*/, '').trim();
    });
    const expected = keyOf(LIST);
    for (const r of renderings) assert.equal(keyOf(r), expected, r);
  });
});

describe('decoders', () => {
  test('xtext', () => {
    assert.equal(decodeXtext('Bouches-du-Rh+C3+B4ne'), 'Bouches-du-Rhône');
    assert.equal(decodeXtext('Bouches-du-Rh+c3+b4ne'), 'Bouches-du-Rhône');
    assert.equal(decodeXtext('a+2Bb+3Dc+20d'), 'a+b=c d');
    assert.equal(decodeXtext('+F0+9F+98+80'), '😀');
    assert.equal(decodeXtext('no escapes'), 'no escapes');
    // Invalid or incomplete sequences stay as written.
    assert.equal(decodeXtext('+FF+41'), '+FFA');
    assert.equal(decodeXtext('x+C3'), 'x+C3');
    assert.equal(decodeXtext('+C3+28'), '+C3(');
    assert.equal(decodeXtext('+C0+AF'), '+C0+AF'); // overlong '/'
    assert.equal(decodeXtext('+ED+A0+80'), '+ED+A0+80'); // surrogate
    assert.equal(decodeXtext('a+G1+4'), 'a+G1+4');
    assert.equal(decodeXtext('end+'), 'end+');
  });

  test('OpenSSL escapes', () => {
    assert.equal(decodeOpensslEscapes('Bouches-du-Rh\\xC3\\xB4ne'), 'Bouches-du-Rhône');
    assert.equal(decodeOpensslEscapes('LA\\xC2\\xA0MUSSE'), 'LA\u00a0MUSSE');
    assert.equal(decodeOpensslEscapes('\\xF0\\x9F\\x98\\x80'), '😀');
    assert.equal(decodeOpensslEscapes('a\\\\b'), 'a\\b');
    assert.equal(decodeOpensslEscapes('A\\/B\\+C'), 'A/B+C');
    assert.equal(decodeOpensslEscapes('caf\\xE9'), 'caf\\xE9'); // Latin-1 byte: not UTF-8
    assert.equal(decodeOpensslEscapes('\\xZZ \\q'), '\\xZZ \\q');
    assert.equal(decodeOpensslEscapes('tail\\'), 'tail\\');
  });

  test('normaliseValue', () => {
    const rows: ReadonlyArray<readonly [string, string]> = [
      ['  Paris(75) ', 'paris (75)'],
      ['"C.H. DE  CADILLAC"', 'c.h. de cadillac'],
      ['CLCC\u00a0 INSTITUT\u00a0CURIE', 'clcc institut curie'],
      ['CLCC\u00a0 INSTITUT\u202fCURIE', 'clcc institut\u202fcurie'],
      [' \u00a0X ', '\u00a0x'],
      ['ÉCOLE Σ', 'école σ'],
      ['CENTRE HOSPITALIER "FRANCK-JOLY"', 'centre hospitalier "franck-joly"'],
      ['"A" "B"', '"a" "b"'],
      ['A\\, B', 'a, b'],
      ['Rh\\C3\\B4ne', 'rhône'],
      ['Rho\u0302ne', 'rho\u0302ne'],
      ['ISTANBUL İ', 'istanbul İ'],
      ['\u212Aelvin', '\u212Aelvin'],
      ['a\\0Ab', 'a\nb'],
      ['', ''],
    ];
    for (const [input, expected] of rows) assert.equal(normaliseValue(input), expected, JSON.stringify(input));
    assert.equal(normaliseCn(' MSS.Example.FR '), 'mss.example.fr');
    // A raw CN is a value, not DN text: quotes and escapes are part of it (a look-alike must not match).
    for (const lookalike of ['"mss.example.fr"', 'mss\\2eexample.fr', 'mss\\.example.fr', 'mss.example.fr\\']) {
      assert.notEqual(normaliseCn(lookalike), 'mss.example.fr', lookalike);
    }
  });
});

describe('parse results', () => {
  test('RDNs keep their order and canonical types; cn is the last CN', () => {
    const dn = dnOf('/C=FR/O=X/1.3.6.1.4.1.311.60.2.1.3=FR/emailAddress=A@B.FR/CN=first.example.fr/CN=Last.Example.FR');
    assert.deepEqual(
      dn.rdns.map((r) => r[0]!.type),
      ['C', 'O', '1.3.6.1.4.1.311.60.2.1.3', 'EMAILADDRESS', 'CN', 'CN'],
    );
    assert.equal(dn.cn, 'last.example.fr');
    assert.equal(dnOf('E=a@b.fr,O=x').rdns[0]![0]!.type, 'EMAILADDRESS');
    assert.equal(dnOf('O=x,C=FR').cn, null);
    assert.equal(dnOf('CN=,O=x').cn, null);
  });

  test('formatDn renders CN first, escaped, on one line', () => {
    assert.equal(
      formatDn(
        dnOf(
          rfc4514(
            reversed([
              ['CN', 'h.example.fr'],
              ['O', 'A, B'],
              ['C', 'FR'],
            ]),
          ),
        ),
      ),
      'CN=h.example.fr,O=a\\, b,C=fr',
    );
    assert.equal(formatDn(dnOf('/C=FR/O=A/CN=h.example.fr')), 'CN=h.example.fr,O=a,C=fr');
    const nasty = formatDn(dnOf('/C=FR/CN=x\\x0D\\x0Aevil: yes'));
    assert.equal(nasty, 'CN=x\\0D\\0Aevil: yes,C=fr');
    assert.equal(keyOf(nasty), keyOf('/C=FR/CN=x\\x0D\\x0Aevil: yes'));
  });

  test('parseDnCached returns the memoised result, equal to parseDn', () => {
    const text = 'CN=mss.ch-cadillac.fr,OU=1330781295,O="C.H. DE  CADILLAC",ST=Gironde (33),C=FR';
    const a = parseDnCached(text);
    assert.equal(parseDnCached(text), a);
    assert.deepEqual(a, parseDn(text));
    const bad = parseDnCached('_');
    assert.equal(bad.ok, false);
    assert.equal(parseDnCached('_'), bad);
  });

  test('rejections', () => {
    const rows: ReadonlyArray<readonly [string, string, RegExp]> = [
      ['empty', '', /empty/],
      ['blank', '   ', /empty/],
      ['only U+00A0', '  \u00a0 ', /without '='/],
      ['a TAB before a type', 'CN=a.example.fr,\tO=x', /attribute type/],
      ['a slash form with an unknown TYPE= inside a value: ambiguous', '/C=FR/O=A/Foo=B/CN=h.example.fr', /ambiguous/],
      ['a slash form with +TYPE= of an unknown type: ambiguous', '/C=FR/CN=h.example.fr+Foo=1', /ambiguous/],
      ['the "_" of the 2020 incident', '_', /without '='/],
      ['a bare host name', 'mss.example.fr', /without '='/],
      ['an RDN without =', 'CN=a.example.fr,FR', /without '='/],
      ['an empty RDN', 'CN=a.example.fr,,C=FR', /empty RDN/],
      ['a trailing separator', 'CN=a.example.fr,', /empty RDN/],
      ['no type', '=a.example.fr', /attribute type/],
      ['a type with a space', 'C N=a.example.fr', /attribute type/],
      ['a type with punctuation', 'C@N=a.example.fr', /attribute type/],
      ['a malformed OID', '2..5=x', /attribute type/],
      ['unbalanced quotes, quoted value', 'CN=a.example.fr,O="CH DE PAU,C=FR', /unbalanced quotes/],
      ['unbalanced quotes, embedded', 'CN=a.example.fr,O=CH "PAU,C=FR', /unbalanced quotes/],
      ['a dangling escape', 'CN=a.example.fr\\', /dangling escape/],
      ['oversize', `CN=${'a'.repeat(MAX_DN_LENGTH)}`, /longer than/],
      ['a raw line break', 'CN=a.example.fr\nO=x', /control character/],
      ['a NUL', 'CN=a.example.fr\u0000', /control character/],
      ['a lone slash', '/', /attribute type/],
      ['a slash form without =', '/CN', /attribute type/],
      ['slash garbage', '/%%%/CN=x', /attribute type/],
    ];
    for (const [name, text, error] of rows) {
      const r = parseDn(text);
      assert.equal(r.ok, false, name);
      if (!r.ok) assert.match(r.error, error, name);
    }
  });
});

describe('the real list (../shared/fixtures/real)', () => {
  test('every DNCertificatOperateur parses, has a CN, and spelling variants collapse', (t: TestContext) => {
    if (!existsSync(REAL_LIST)) {
      if (process.env.CI === 'true') throw new Error(`real list missing: ${REAL_LIST}`);
      t.skip(`real list absent (${REAL_LIST}): /work/shared not mounted`);
      return;
    }
    const xml = readFileSync(REAL_LIST, 'utf8');
    const entities: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
    const decodeXml = (s: string): string =>
      s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_m, e: string) =>
        e.startsWith('#x')
          ? String.fromCodePoint(parseInt(e.slice(2), 16))
          : e.startsWith('#')
            ? String.fromCodePoint(parseInt(e.slice(1), 10))
            : entities[e]!,
      );
    const texts = [...xml.matchAll(/<DNCertificatOperateur>([^<]*)<\/DNCertificatOperateur>/g)].map((m) =>
      decodeXml(m[1]!).trim(),
    );
    // The regex must have seen every element, or the counts below would prove nothing.
    assert.equal(texts.length, xml.split('<DNCertificatOperateur').length - 1);
    assert.equal(texts.length, 6494);

    const raw = new Set(texts);
    const byKey = new Map<string, string[]>();
    for (const text of raw) {
      const r = parseDn(text);
      assert.ok(r.ok, `${text}: ${r.ok ? '' : r.error}`);
      assert.ok(r.dn.cn !== null && /^[a-z0-9.-]+$/.test(r.dn.cn), `${text}: CN ${String(r.dn.cn)}`);
      byKey.set(r.dn.key, [...(byKey.get(r.dn.key) ?? []), text]);
      // The same subject as an MTA would render it must land on the same key.
      assert.ok(
        r.dn.rdns.every((x) => x.length === 1),
        text,
      );
      const pairs: Pairs = [...r.dn.rdns].reverse().map((x) => [x[0]!.type, x[0]!.value] as const);
      assert.equal(keyOf(opensslSlash(pairs)), r.dn.key, text);
      assert.equal(keyOf(rfc4514(pairs)), r.dn.key, text);
      assert.equal(keyOf(formatDn(r.dn)), r.dn.key, text);
    }
    t.diagnostic(`${texts.length} entries, ${raw.size} distinct DN strings, ${byKey.size} distinct subjects`);
    assert.equal(raw.size, 391);
    // The real list's 10 spelling groups (391 strings, 381 subjects) collapse, and no more.
    assert.equal(byKey.size, 381);

    const sameKey = (a: string, b: string): boolean => keyOf(a) === keyOf(b);
    const listed = [...raw];
    const find = (needle: string): string[] => listed.filter((s) => s.includes(needle));
    const pick = (needle: string, i: number): string => find(needle)[i]!;
    assert.ok(sameKey(pick('CN=smtp-1.sesan.santnet.com', 0), pick('CN=smtp-1.sesan.santnet.com', 1)));
    assert.ok(sameKey(pick('CN=mss.ch-cadillac.fr', 0), pick('CN=mss.ch-cadillac.fr', 1)));
    assert.ok(!sameKey(pick('CN=messagerie1.mssantepdl.fr', 0), pick('CN=messagerie1.mssantepdl.fr', 1)));
    assert.equal(new Set(find('CN=mssante.ch-ouestguyane.fr').map(keyOf)).size, 2);
  });
});

describe('properties (fast-check)', () => {
  const tricky = fc.constantFrom(
    ...'=,;+"\\/ \u00a0#<>()xX0123456789ABCDEFabcdef+é'.split(''),
    'CN=',
    '/O=',
    '\\x',
    '\\C3',
    '+C3',
    '"',
    'OID.2.5.4.3=',
  );

  test('parseDn never throws, and anything it accepts has a well-formed key', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ unit: tricky, maxLength: 60 })), (s) => {
        const r = parseDn(s);
        if (r.ok) {
          assert.ok(r.dn.rdns.length > 0);
          assert.equal(typeof r.dn.key, 'string');
          assert.equal(keyOf(formatDn(r.dn)), r.dn.key);
        } else assert.ok(r.error.length > 0);
      }),
      { numRuns: 3000 },
    );
  });

  // No backslash: OpenSSL's slash form does not escape it, so a value holding `\x41` is ambiguous there.
  const valueChar = fc.oneof(
    fc.constantFrom(...'abcXYZ019 .-_\'()/,;+="<>#éôÉ\u00a0'.split(''), '😀', '\u0007'),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }).filter((c) => c !== '\\'),
  );
  const subject = fc.array(
    fc.tuple(
      fc.constantFrom('CN', 'OU', 'O', 'L', 'ST', 'C', 'emailAddress', 'serialNumber', '2.5.4.97'),
      fc.string({ unit: valueChar, maxLength: 12 }),
    ),
    { minLength: 1, maxLength: 6 },
  );

  test('one subject written forwards, reversed, RFC 4514 or OpenSSL slash form has one key', () => {
    fc.assert(
      fc.property(subject, (pairs) => {
        const k = keyOf(rfc4514(pairs));
        assert.equal(keyOf(rfc4514(reversed(pairs))), k);
        assert.equal(keyOf(opensslSlash(pairs)), k);
        assert.equal(keyOf(opensslSlash(reversed(pairs))), k);
        assert.equal(keyOf(decodeXtext(sendmailXtext(opensslSlash(pairs)))), k);
      }),
      { numRuns: 1500 },
    );
  });

  test('no value can forge a separator: equal keys mean equal RDN sequences, in one order or the other', () => {
    const withBackslash = fc.array(
      fc.tuple(
        fc.constantFrom('CN', 'O', 'OU'),
        fc.string({ unit: fc.constantFrom('a', 'b', ',', '=', '\\', 'O', 'C', 'N', ' ', '+'), maxLength: 8 }),
      ),
      { minLength: 1, maxLength: 4 },
    );
    const seq = (dn: Dn): string => JSON.stringify(dn.rdns.map((r) => r.map((x) => [x.type, x.value])));
    fc.assert(
      fc.property(withBackslash, withBackslash, (a, b) => {
        const da = dnOf(rfc4514(a));
        const db = dnOf(rfc4514(b));
        const reversedA = JSON.stringify([...da.rdns].reverse().map((r) => r.map((x) => [x.type, x.value])));
        assert.equal(da.key === db.key, seq(da) === seq(db) || reversedA === seq(db));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('identity equality folds only what is documented (no false pass by normalisation)', () => {
  const LISTED_CN = 'mx.victim.test';
  const LISTED = 'CN=mx.victim.test,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR';
  // Unicode spaces, invisible characters and compatibility look-alikes an attacker can put in a certificate.
  const hostile: ReadonlyArray<readonly [string, string]> = [
    ['trailing U+00A0 (ccert_subject=mx.victim.test+C2+A0)', decodeXtext('mx.victim.test+C2+A0')],
    ['leading U+3000 (+E3+80+80mx.victim.test)', decodeXtext('+E3+80+80mx.victim.test')],
    ['leading U+00A0', '\u00a0mx.victim.test'],
    ['trailing U+2000', 'mx.victim.test\u2000'],
    ['trailing U+200A', 'mx.victim.test\u200a'],
    ['trailing U+FEFF', 'mx.victim.test\ufeff'],
    ['leading BOM U+FEFF', '\ufeffmx.victim.test'],
    ['trailing TAB', 'mx.victim.test\t'],
    ['leading TAB', '\tmx.victim.test'],
    ['embedded TAB', 'mx.victim\t.test'],
    ['embedded U+200B', 'mx.vic\u200btim.test'],
    ['full-width letters', 'ｍｘ.victim.test'],
    ['combining mark', 'mx.vi\u0301ctim.test'],
  ];
  test('CN path (Postfix ccert_subject, Milter {cert_subject}): no hostile spelling matches the listed CN', () => {
    for (const [name, cn] of hostile) assert.notEqual(normaliseCn(cn), normaliseCn(LISTED_CN), name);
    assert.notEqual(normaliseCn('\u212Aey.example'), normaliseCn('key.example'), 'U+212A KELVIN SIGN is not k');
    assert.notEqual(normaliseCn('\u212Aey.example'), normaliseCn('Key.example'), 'U+212A KELVIN SIGN is not K');
    // What is documented still folds: ASCII case and ASCII spaces at the ends.
    assert.equal(normaliseCn(' MX.Victim.TEST '), normaliseCn(LISTED_CN));
    assert.equal(normaliseCn(decodeXtext('mx.victim.test+20')), normaliseCn(LISTED_CN));
  });

  test('full-DN path: no hostile spelling of the CN gives the listed subject', () => {
    const key = keyOf(LISTED);
    for (const [name, cn] of hostile) {
      const subject: Pairs = [
        ['C', 'FR'],
        ['ST', 'Paris (75)'],
        ['O', 'GIP SESAN'],
        ['OU', '1750048886'],
        ['CN', cn],
      ];
      for (const rendering of [rfc4514(subject), opensslSlash(subject), opensslSlash(subject, false)]) {
        const r = parseDn(rendering);
        if (r.ok) assert.notEqual(r.dn.key, key, `${name}: ${rendering}`);
      }
    }
    assert.notEqual(keyOf('CN=mx.victim.test\\C2\\A0,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR'), key);
    assert.notEqual(keyOf('CN=mx.victim.test,OU=1750048886,O=GIP\u3000SESAN,ST=Paris (75),C=FR'), key);
    assert.notEqual(keyOf('CN=mx.victim.test,OU=1750048886,O=GIP SESAN\u00a0,ST=Paris (75),C=FR'), key);
    assert.equal(keyOf('CN=mx.victim.test ,OU=1750048886, O=GIP\u00a0 SESAN,ST=Paris(75),C=fr'), key);
  });

  test('slash form: a / splits only before a known type and =', () => {
    // Bare / inside a value (the real list writes SEBASTIEN/MORSENT) stays text.
    assert.equal(dnOf('/C=FR/O=HOPITAL ST SEBASTIEN/MORSENT/CN=h.example.fr').rdns[1]![0]!.value, 'hopital st sebastien/morsent');
    // An escaped \/ (OpenSSL 3) never splits, even before a known type.
    assert.deepEqual(
      dnOf('/C=FR/O=A\\/CN=x/CN=h.example.fr').rdns.map((r) => r[0]!.value),
      ['fr', 'a/cn=x', 'h.example.fr'],
    );
  });

  // The documented folds, as a generator can see them: ASCII letter case, ASCII spaces (ends, runs),
  // U+00A0 inside a run. Any other code point inserted anywhere, or replacing a character, must
  // change the identity.
  const significant = fc
    .oneof(
      fc.constantFrom(
        '\u212a',
        '\u212b',
        '\u0130',
        '\u017f',
        '\u037e',
        '\u2126',
        '\t',
        '\u3000',
        '\u2000',
        '\u2005',
        '\u200a',
        '\u200b',
        '\ufeff',
        '\u202f',
        '\u1680',
        '\u0301',
        '\uff4d',
        '\u00c5',
        '\u00e5',
        'é',
        'É',
        '"',
        '\\',
        '+',
        ',',
        '=',
        '/',
        '.',
        '-',
        '0',
        '\u00a0',
      ),
      fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
    )
    .filter((c) => c !== ' ' && !/^[A-Za-z]$/.test(c));
  const host = fc.string({
    unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789.-'.split('')),
    minLength: 1,
    maxLength: 20,
  });

  const variants = (base: string, c: string, at: number): string[] => {
    const i = at % (base.length + 1);
    const out = [base.slice(0, i) + c + base.slice(i)];
    if (i < base.length && c.toLowerCase() !== base[i]!.toLowerCase()) out.push(base.slice(0, i) + c + base.slice(i + 1));
    // A U+00A0 inside the value between two non-spaces is a documented fold only when it replaces
    // or joins a space; inserted into a host name that has none, it is a new character.
    return out;
  };

  test('property: two CNs differing in a code point outside the documented folds never match', () => {
    fc.assert(
      fc.property(host, significant, fc.nat(), fc.boolean(), (base, c, at, upper) => {
        const listed = normaliseCn(base);
        for (const v of variants(base, c, at)) {
          const shown = upper ? v.replace(/[a-z]/g, (x) => x.toUpperCase()) : v;
          assert.notEqual(normaliseCn(shown), listed, JSON.stringify(shown));
          assert.notEqual(normaliseCn(` ${shown} `), listed, JSON.stringify(shown));
        }
      }),
      { numRuns: 3000 },
    );
  });

  test('property: two full DNs differing in a code point outside the documented folds never match', () => {
    const rdnValue = fc.string({ unit: fc.constantFrom(...'abcXYZ019.-'.split('')), minLength: 1, maxLength: 10 });
    const subject = fc.array(fc.tuple(fc.constantFrom('CN', 'OU', 'O', 'ST', 'C'), rdnValue), { minLength: 1, maxLength: 5 });
    fc.assert(
      fc.property(subject, fc.nat(), significant, fc.nat(), (pairs, which, c, at) => {
        const k = which % pairs.length;
        const listed = keyOf(rfc4514(pairs));
        for (const v of variants(pairs[k]![1], c, at)) {
          const changed: Pairs = pairs.map((p, i) => (i === k ? ([p[0], v] as const) : p));
          for (const rendering of [rfc4514(changed), rfc4514(reversed(changed)), opensslSlash(changed)]) {
            const r = parseDn(rendering);
            if (r.ok) assert.notEqual(r.dn.key, listed, JSON.stringify(rendering));
          }
        }
      }),
      { numRuns: 3000 },
    );
  });
});
