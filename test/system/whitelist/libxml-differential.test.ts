/**
 * The libxml2 list preparation against the frozen v0.1 path (issue #25): the real list, every hostile
 * variant the signature and fault tests build, and a fixed-seed subset of the fuzz run
 * (scripts/list-fuzz.ts runs 10 000). Same verdict and same entries, or a documented safer refusal
 * (test/support/list-differential.ts, DOCUMENTED_DIVERGENCES).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { prepareList, type PrepareOptions } from '../../../src/whitelist/prepare.js';
import { loadSignerTrust } from '../../../src/whitelist/signature.js';
import { realListOrSkip } from '../../support/fixtures.js';
import {
  differential,
  DOCUMENTED_DIVERGENCES,
  randomMutation,
  realListExcerpt,
  seededRandom,
  type Comparison,
} from '../../support/list-differential.js';
import { TestPki, type Issued } from '../../support/pki.js';
import { toolOrSkip } from '../../support/tools.js';
import { ALGORITHMS, buildListXml, signatureTemplate, signList, signTemplate, withTemplate } from '../../support/xmlsec.js';

const GENERATED = '2025-02-28T15:42:07Z';
const ENTRIES = [
  { nom: 'alpha.mssante.fr', dn: 'CN=mx.alpha.fr,OU=318310021300028,O=GIP ALPHA,ST=Paris (75),C=FR' },
  { nom: 'beta.mssante.fr', dn: 'CN=mx.beta.fr,OU=123456789,O="C.H. DE  BETA",ST=Gironde (33),C=FR' },
  { nom: 'Gamma.MSSante.fr', dn: 'CN=mx.gamma.fr,OU=987654321,O=CENTRE HOSPITALIER "GAMMA" & Co,ST=Nord (59),C=FR' },
  { nom: '_', dn: '_' },
];

let signer: Issued | undefined;
function testSigner(): Issued {
  signer ??= new TestPki().issue(
    'differential-signer',
    [
      ['C', 'FR'],
      ['O', 'TEST ANS'],
      ['CN', 'alb.test.fr'],
    ],
    null,
    { usage: 'signing', notBefore: '20240101000000Z', notAfter: '20390101000000Z' },
  );
  return signer;
}

function signedOptions(): PrepareOptions {
  return { trust: loadSignerTrust([testSigner().certPath]), allowUnsigned: false, maxEntries: 100_000 };
}
const UNSIGNED: PrepareOptions = { trust: null, allowUnsigned: true, maxEntries: 100_000 };

function notDivergent(t: TestContext, name: string, comparison: Comparison): Comparison {
  assert.notEqual(comparison.kind, 'divergent', `${name}: old ${comparison.old}, new ${comparison.new}: ${comparison.note}`);
  if (comparison.kind === 'documented')
    t.diagnostic(`${name}: old ${comparison.old} → new ${comparison.new} (${comparison.note})`);
  return comparison;
}

test('the real list: same verdict, same entries and rejections, same signer', (t) => {
  const real = realListOrSkip(t);
  if (real === null) return;
  const bytes = readFileSync(real.list);
  const comparison = differential(bytes, { trust: loadSignerTrust([real.signer]), allowUnsigned: false, maxEntries: 100_000 });
  assert.deepEqual([comparison.kind, comparison.old, comparison.new], ['same', 'ok', 'ok'], comparison.note);
  const unsigned = differential(bytes, UNSIGNED);
  assert.deepEqual([unsigned.kind, unsigned.old, unsigned.new], ['same', 'ok', 'ok'], unsigned.note);
  const prepared = prepareList(bytes, { trust: loadSignerTrust([real.signer]), allowUnsigned: false, maxEntries: 100_000 });
  assert.ok(prepared.ok);
  assert.equal(prepared.list.rawEntryCount, 6494);
});

test('every hostile variant of the signature and fault tests: same outcome, or a documented safer refusal', (t) => {
  if (toolOrSkip(t, 'xmlsec1') === null) return;
  const s = testSigner();
  const unsigned = buildListXml(ENTRIES, GENERATED);
  const xml = signList(unsigned, s);
  const signature = /<Signature[\s\S]*<\/Signature>/.exec(xml)?.[0] ?? '';
  assert.ok(signature.length > 0);
  const forged =
    '<ListeDomaines><Domaine><Nom>evil.fr</Nom><DNCertificatOperateur>CN=evil</DNCertificatOperateur></Domaine></ListeDomaines>';
  const bomb = '<!DOCTYPE ListeBlancheMSSante [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>';
  const prefixedUnsigned = unsigned.replace(
    '<ListeBlancheMSSante ',
    `<ListeBlancheMSSante xmlns:ds="http://www.w3.org/2000/09/xmldsig#" `,
  );
  const variants: Record<string, { text: string; expect?: Comparison['kind'] }> = {
    genuine: { text: xml, expect: 'same' },
    'wrapped ListeDomaines, forged one beside': {
      text: xml
        .replace('<ListeDomaines>', '<Archive><ListeDomaines>')
        .replace('</ListeDomaines>', `</ListeDomaines></Archive>${forged}`),
      expect: 'same',
    },
    'signed document nested in a forged one': {
      text: `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>2030-01-01T00:00:00Z</DateDeGeneration>${forged}<Archive>${xml.replace(/^<\?xml[^>]*\?>\s*/, '')}</Archive></ListeBlancheMSSante>`,
      expect: 'same',
    },
    'forged list carrying the genuine Signature': {
      text: `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>${GENERATED}</DateDeGeneration>${forged}${signature}</ListeBlancheMSSante>`,
      expect: 'same',
    },
    'Signature moved first': {
      text: xml.replace(signature, '').replace('<DateDeGeneration>', `${signature}<DateDeGeneration>`),
      expect: 'same',
    },
    'content after the Signature': { text: xml.replace('</Signature>', `</Signature>${forged}`), expect: 'same' },
    'comment after the Signature': { text: xml.replace('</Signature>', '</Signature><!-- c -->'), expect: 'same' },
    'second Signature after': { text: xml.replace('</Signature>', `</Signature>${signature}`), expect: 'same' },
    'second Signature inside the data': { text: xml.replace('<ListeDomaines>', `<ListeDomaines>${signature}`), expect: 'same' },
    'stray XMLDSig element': {
      text: xml.replace('<ListeDomaines>', '<ListeDomaines><SignedInfo xmlns="http://www.w3.org/2000/09/xmldsig#"/>'),
      expect: 'same',
    },
    'comment inside a name': {
      text: xml.replace('<Nom>alpha.mssante.fr</Nom>', '<Nom>alpha<!-- note -->.mssante.fr</Nom><!-- after -->'),
      expect: 'same',
    },
    'CDATA name': { text: xml.replace('<Nom>beta.mssante.fr</Nom>', '<Nom><![CDATA[beta.mssante.fr]]></Nom>'), expect: 'same' },
    'CR LF line ends': { text: xml.replace(/\n/g, '\r\n'), expect: 'same' },
    '&#13; in the base64': {
      text: xml.replace(
        /(<(SignatureValue|X509Certificate)>)([^<]*)/g,
        (_m, open: string, _n, body: string) => open + body.replace(/\n/g, '&#13;\n'),
      ),
      expect: 'same',
    },
    'character reference in a name': {
      text: xml.replace('<Nom>alpha.mssante.fr</Nom>', '<Nom>&#97;lpha.mssante.fr</Nom>'),
      expect: 'same',
    },
    'processing instruction in a name': {
      text: xml.replace('<Nom>alpha.mssante.fr</Nom>', '<Nom>alpha.mssante.fr<?evil x?></Nom>'),
    },
    'processing instruction in the prolog': { text: xml.replace('?>', '?><?xml-stylesheet href="x"?>') },
    'DOCTYPE with an entity bomb': {
      text: xml.replace('?>', `?>${bomb}`).replace('<Description>', '<Description>&b;'),
      expect: 'same',
    },
    'undefined entity': { text: xml.replace('<Nom>alpha', '<Nom>&nbsp;alpha'), expect: 'same' },
    'truncated before the root end tag': { text: xml.slice(0, xml.lastIndexOf('</ListeBlancheMSSante>')), expect: 'same' },
    'truncated mid-entry': { text: xml.slice(0, xml.indexOf('</Domaine>')) },
    'trailing garbage': { text: `${xml}garbage`, expect: 'same' },
    'one changed character': { text: xml.replace('<Nom>beta.mssante.fr</Nom>', '<Nom>bete.mssante.fr</Nom>'), expect: 'same' },
    'changed SignatureValue': {
      text: xml.replace(/<SignatureValue>(.)/, (_m, c: string) => `<SignatureValue>${c === 'A' ? 'B' : 'A'}`),
      expect: 'same',
    },
    'Object in the Signature': { text: xml.replace('</KeyInfo>', '</KeyInfo><Object>x</Object>'), expect: 'same' },
    'Id attribute on the Signature': { text: xml.replace('<Signature ', '<Signature Id="s" '), expect: 'same' },
    'unused namespace declaration on the root': {
      text: xml.replace('<ListeBlancheMSSante ', '<ListeBlancheMSSante xmlns:x="urn:x" '),
      expect: 'same',
    },
    unsigned: { text: unsigned, expect: 'same' },
  };
  const prefixed = signTemplate(withTemplate(prefixedUnsigned, signatureTemplate({ prefix: 'ds', declareNamespace: false })), s);
  variants['ds: prefix declared on the root'] = { text: prefixed, expect: 'same' };
  variants['rsa-sha1'] = {
    text: signTemplate(withTemplate(unsigned, signatureTemplate({ signatureMethod: ALGORITHMS.rsaSha1 })), s),
    expect: 'same',
  };

  const options = signedOptions();
  for (const [name, { text, expect }] of Object.entries(variants)) {
    for (const [mode, opts] of [
      ['signed', options],
      ['unsigned', UNSIGNED],
    ] as const) {
      const comparison = notDivergent(t, `${name} (${mode})`, differential(Buffer.from(text), opts));
      if (expect !== undefined && mode === 'signed') assert.equal(comparison.kind, expect, `${name}: ${comparison.note}`);
    }
  }
  // The genuine list and its c14n-neutral variants are accepted by both, with the same entries.
  assert.equal(differential(Buffer.from(xml), options).new, 'ok');
  assert.equal(differential(Buffer.from(variants['comment inside a name']?.text ?? ''), options).new, 'ok');
});

test('the rules that refuse more than v0.1 did, each on its own', () => {
  const list = (inner: string): Buffer =>
    Buffer.from(
      buildListXml([{ nom: 'alpha.mssante.fr', dn: ENTRIES[0]?.dn ?? '' }], GENERATED).replace(
        'alpha.mssante.fr</Nom>',
        `alpha.mssante.fr${inner}</Nom>`,
      ),
    );
  const reason = (bytes: Buffer): string | null =>
    ((r) => (r.ok ? null : `${r.reason}: ${r.detail}`))(prepareList(bytes, UNSIGNED));
  assert.match(reason(list('&#13;')) ?? '', /^xml_malformed: a CR \(&#13;\) in Nom/);
  assert.match(reason(list('&#97;')) ?? '', /^xml_malformed: numeric character reference "&#97;/);
  assert.match(reason(list('<?pi x?>')) ?? '', /^xml_malformed: the list holds a processing instruction/);
  assert.match(reason(list('&evil;')) ?? '', /^xml_malformed: not well-formed XML: .*evil/);
  assert.match(reason(list('<!-- <!DOCTYPE x> -->')) ?? '', /^doctype_forbidden/);
  const deep = Buffer.from(
    buildListXml([], GENERATED).replace('<ListeDomaines>', `<ListeDomaines>${'<x>'.repeat(3000)}${'</x>'.repeat(3000)}`),
  );
  assert.match(reason(deep) ?? '', /^xml_malformed/);
  assert.equal(reason(list('')), null, 'the plain list is still usable');
  assert.ok(DOCUMENTED_DIVERGENCES.every((d) => d.why.length > 40));
});

test('300 fuzzed mutations of the re-signed real list (seed 25): no undocumented divergence', (t) => {
  const real = realListOrSkip(t);
  if (real === null || toolOrSkip(t, 'xmlsec1') === null) return;
  const excerpt = signList(realListExcerpt(readFileSync(real.list, 'utf8'), 25), testSigner());
  const options = signedOptions();
  const rng = seededRandom(25);
  const tally = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    const { text, kinds } = randomMutation(excerpt, rng);
    const mode = rng() < 0.8 ? 'signed' : 'unsigned';
    const comparison = differential(Buffer.from(text), mode === 'signed' ? options : UNSIGNED);
    assert.notEqual(
      comparison.kind,
      'divergent',
      `#${i} ${mode} ${kinds.join('+')}: old ${comparison.old}, new ${comparison.new}: ${comparison.note}`,
    );
    const key = `${comparison.kind} ${comparison.note}`.trim();
    tally.set(key, (tally.get(key) ?? 0) + 1);
  }
  t.diagnostic([...tally.entries()].map(([k, n]) => `${n} ${k}`).join(', '));
  assert.ok((tally.get('same') ?? 0) > 200, 'most mutations give the same outcome');
});
