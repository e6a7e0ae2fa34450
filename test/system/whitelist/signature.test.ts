import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { DOMParser } from '@xmldom/xmldom';
import { SignedXml } from 'xml-crypto';
import { isSigned as isSignedBytes } from '../../../src/whitelist/list-bytes.js';
import {
  loadSignerTrust,
  type SignatureFailure,
  type SignatureVerdict,
  type SignerTrust,
} from '../../../src/whitelist/signature.js';
import { verifyListSignature } from '../../../src/whitelist/xmldsig.js';

const isSigned = (xml: string): boolean => isSignedBytes(Buffer.from(xml, 'utf8'));
import { TestPki, type Issued, type Subject } from '../../support/pki.js';
import { IGC_ORGANISATIONS_CA, REAL_LIST, REAL_SIGNER } from '../../support/fixtures.js';
import { toolOrSkip } from '../../support/tools.js';
import {
  ALGORITHMS,
  buildListXml,
  signatureTemplate,
  signList,
  signTemplate,
  withTemplate,
  type TemplateOptions,
} from '../../support/xmlsec.js';

const GENERATED = '2025-02-28T15:42:07Z';
const ENTRIES = [
  { nom: 'alpha.mssante.fr', dn: 'CN=mx.alpha.fr,OU=318310021300028,O=GIP ALPHA,ST=Paris (75),C=FR' },
  { nom: 'beta.mssante.fr', dn: 'CN=mx.beta.fr,OU=123456789,O="C.H. DE  BETA",ST=Gironde (33),C=FR' },
  { nom: 'Gamma.MSSante.fr', dn: 'CN=mx.gamma.fr,OU=987654321,O=CENTRE HOSPITALIER "GAMMA" & Co,ST=Nord (59),C=FR' },
];

function realOrSkip(t: TestContext): string | null {
  if (existsSync(REAL_LIST) && existsSync(REAL_SIGNER)) return readFileSync(REAL_LIST, 'utf8');
  const why = `real list absent (${REAL_LIST}): ../shared is not beside the repository`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  t.skip(why);
  return null;
}

function refused(verdict: SignatureVerdict, reason: SignatureFailure, detail?: RegExp): void {
  assert.equal(verdict.ok, false, `expected ${reason}, got ok`);
  if (verdict.ok) return;
  assert.equal(verdict.reason, reason, `detail: ${verdict.detail}`);
  if (detail) assert.match(verdict.detail, detail);
}

function accepted(verdict: SignatureVerdict): asserts verdict is Extract<SignatureVerdict, { ok: true }> {
  assert.equal(verdict.ok, true, verdict.ok ? '' : `${verdict.reason}: ${verdict.detail}`);
}

// One PKI for the whole file: RSA key generation is the slow part.
interface Pki {
  root: Issued;
  inter: Issued;
  signer: Issued;
  expired: Issued;
  outsiderCa: Issued;
  outsider: Issued;
  /** An operator's TLS certificate from the signer's CA (EKU serverAuth/clientAuth), O=ATTACKER. */
  attackerTls: Issued;
  /** The same, carrying the signer's CN (a CA mistake): only the key usage rule stops it. */
  tlsWithSignerCn: Issued;
  /** The signer's CN, key usage keyEncipherment only. */
  encipherOnly: Issued;
  /** The signer's CN, no key usage extensions at all (allowed: any use). */
  noExtensions: Issued;
  /** A PEM file holding the root and the intermediate, as an operator would configure IGC-Santé. */
  bundlePath: string;
  /** A PEM file holding the signer and its CA: refused as --signer. */
  mixedPath: string;
}
let pki: Pki | undefined;
function getPki(): Pki {
  if (pki) return pki;
  const p = new TestPki();
  const wide = { notBefore: '20200101000000Z', notAfter: '20400101000000Z' };
  const subject = (cn: string): Subject => [
    ['C', 'FR'],
    ['O', 'TEST-SANTE'],
    ['OU', '0002 187512751'],
    ['CN', cn],
  ];
  const root = p.createCa('root', subject('AC RACINE TEST-SANTE'), wide);
  const inter = p.issue('inter', subject('AC TEST-SANTE ORGANISATIONS'), root, { usage: 'ca', ...wide });
  const signerSubject: Subject = [
    ['C', 'FR'],
    ['ST', 'Hauts-de-Seine (92)'],
    ['O', 'TEST LISTES'],
    ['OU', '347976684200724'],
    ['CN', 'alb.test.fr'],
  ];
  const signer = p.issue('signer', signerSubject, inter, {
    usage: 'signing',
    notBefore: '20240101000000Z',
    notAfter: '20390101000000Z',
  });
  // Expired today, valid on GENERATED: the real signer's situation.
  const expired = p.issue('expired', signerSubject, inter, {
    usage: 'signing',
    notBefore: '20240601000000Z',
    notAfter: '20250601000000Z',
  });
  const outsiderCa = p.createCa('outsider-ca', subject('AC RACINE TEST-SANTE'), wide);
  const outsider = p.issue('outsider', signerSubject, outsiderCa, {
    usage: 'signing',
    notBefore: '20240101000000Z',
    notAfter: '20390101000000Z',
  });
  const valid = { notBefore: '20240101000000Z', notAfter: '20390101000000Z' };
  const attackerTls = p.issue(
    'attacker-tls',
    [
      ['C', 'FR'],
      ['ST', 'Paris (75)'],
      ['O', 'ATTACKER'],
      ['OU', '999999999'],
      ['CN', 'mx.attacker.test'],
    ],
    inter,
    { usage: 'tls', ...valid },
  );
  const tlsWithSignerCn = p.issue('tls-signer-cn', signerSubject, inter, { usage: 'tls', ...valid });
  const encipherOnly = p.issue('encipher-only', signerSubject, inter, { usage: 'encipherment', ...valid });
  const noExtensions = p.issue('no-extensions', signerSubject, inter, { usage: 'no-extensions', ...valid });
  const dir = mkdtempSync(join(tmpdir(), 'mssante-trust-'));
  const bundlePath = join(dir, 'igc.pem');
  writeFileSync(bundlePath, `${root.certPem}\n${inter.certPem}`);
  const mixedPath = join(dir, 'signer-and-ca.pem');
  writeFileSync(mixedPath, `${signer.certPem}\n${inter.certPem}`);
  pki = {
    root,
    inter,
    signer,
    expired,
    outsiderCa,
    outsider,
    attackerTls,
    tlsWithSignerCn,
    encipherOnly,
    noExtensions,
    bundlePath,
    mixedPath,
  };
  return pki;
}

function trustOf(...paths: string[]): SignerTrust {
  return loadSignerTrust(paths);
}

/** CA mode: the CA file(s) plus the signer's CN (the test signer is alb.test.fr). */
function caTrust(paths: string[], constraint: { cn?: string[]; subject?: string[] } = { cn: ['alb.test.fr'] }): SignerTrust {
  return loadSignerTrust({ signer: [], signerCa: paths, signerCn: constraint.cn ?? [], signerSubject: constraint.subject ?? [] });
}

/** xmlsec1-signed list (ANS profile) and the trust that pins its signer; null when skipped. */
function signedOrSkip(t: TestContext, generatedAt = GENERATED, signer?: Issued): { xml: string; pinned: SignerTrust } | null {
  if (toolOrSkip(t, 'xmlsec1') === null) return null;
  const s = signer ?? getPki().signer;
  return { xml: signList(buildListXml(ENTRIES, generatedAt), s), pinned: trustOf(s.certPath) };
}

function variant(
  t: TestContext,
  options: TemplateOptions,
  extraArgs: readonly string[] = [],
  unsigned = buildListXml(ENTRIES, GENERATED),
): string | null {
  if (toolOrSkip(t, 'xmlsec1') === null) return null;
  return signTemplate(withTemplate(unsigned, signatureTemplate(options)), getPki().signer, extraArgs);
}

test('the real ANS list verifies with its pinned signer, judged at DateDeGeneration', (t) => {
  const xml = realOrSkip(t);
  if (xml === null) return;
  const trust = trustOf(REAL_SIGNER);
  const cpu = process.cpuUsage();
  const started = performance.now();
  const verdict = verifyListSignature(xml, trust);
  const wallMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  t.diagnostic(
    `real list (${(xml.length / 1e6).toFixed(1)} MB): wall ${wallMs.toFixed(0)} ms, CPU user ${(used.user / 1000).toFixed(0)} ms + system ${(used.system / 1000).toFixed(0)} ms`,
  );
  accepted(verdict);
  assert.equal(verdict.generatedAt.toISOString(), '2025-02-28T15:42:07.000Z');
  assert.equal(verdict.signer.trustedBy, 'pinned');
  assert.match(verdict.signer.subject, /CN=alb\.mssante\.fr/);
  assert.match(verdict.signer.issuer, /AC IGC-SANTE ELEMENTAIRE ORGANISATIONS/);
  assert.equal(verdict.signer.validTo, '2026-08-23T13:54:23.000Z');
  assert.equal(verdict.signer.fingerprint256, new X509Certificate(readFileSync(REAL_SIGNER)).fingerprint256);
  assert.equal(isSigned(xml), true);
});

test('the real ANS list is refused when its signer is not configured', (t) => {
  const xml = realOrSkip(t);
  if (xml === null) return;
  refused(
    verifyListSignature(xml, caTrust([getPki().bundlePath], { cn: ['alb.mssante.fr'] })),
    'signer_untrusted',
    /alb\.mssante\.fr/,
  );
});

test('the real ANS list with one changed character is refused (digest)', (t) => {
  const xml = realOrSkip(t);
  if (xml === null) return;
  const tampered = xml.replace('<Nom>1001-services.mssante.fr</Nom>', '<Nom>1001-servicez.mssante.fr</Nom>');
  assert.notEqual(tampered, xml);
  refused(verifyListSignature(tampered, trustOf(REAL_SIGNER)), 'signature_digest_mismatch');
});

test('an xmlsec1-signed list verifies: pinned leaf, CA bundle + CN, intermediate alone + CN', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const { root, inter, signer } = getPki();
  const pinned = verifyListSignature(signed.xml, signed.pinned);
  accepted(pinned);
  assert.equal(pinned.signer.trustedBy, 'pinned');
  assert.equal(pinned.signer.subject, 'C=FR, ST=Hauts-de-Seine (92), O=TEST LISTES, OU=347976684200724, CN=alb.test.fr');
  assert.equal(pinned.signer.fingerprint256, new X509Certificate(signer.certPem).fingerprint256);
  assert.equal(pinned.generatedAt.toISOString(), '2025-02-28T15:42:07.000Z');

  const viaBundle = verifyListSignature(signed.xml, caTrust([getPki().bundlePath]));
  accepted(viaBundle);
  assert.equal(viaBundle.signer.trustedBy, 'ca');
  const viaFiles = verifyListSignature(signed.xml, caTrust([root.certPath, inter.certPath]));
  accepted(viaFiles);
  assert.equal(viaFiles.signer.trustedBy, 'ca');
  const viaIntermediate = verifyListSignature(signed.xml, caTrust([inter.certPath]));
  accepted(viaIntermediate);
  assert.equal(viaIntermediate.signer.trustedBy, 'ca');
  assert.equal(isSigned(signed.xml), true);
});

test('xml-crypto checkSignature() agrees on the xmlsec1-signed list (independent oracle)', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const doc = new DOMParser().parseFromString(signed.xml, 'text/xml');
  const sx = new SignedXml({ publicCert: getPki().signer.certPem });
  const signatures: unknown[] = sx.findSignatures(doc);
  const signature = signatures[0];
  assert.ok(signature);
  sx.loadSignature(signature);
  assert.equal(sx.checkSignature(signed.xml), true);
  accepted(verifyListSignature(signed.xml, signed.pinned));
});

test('a root CA alone is not enough: KeyInfo carries no intermediate', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  refused(verifyListSignature(signed.xml, caTrust([getPki().root.certPath])), 'signer_untrusted');
});

test('a signer from another CA, or a look-alike subject, is untrusted', (t) => {
  const { outsider, outsiderCa, bundlePath, signer } = getPki();
  const signed = signedOrSkip(t, GENERATED, outsider);
  if (signed === null) return;
  // Same subject and issuer names as the trusted ones, other keys.
  refused(
    verifyListSignature(signed.xml, caTrust([bundlePath])),
    'signer_untrusted',
    /is not issued by a --signer-ca certificate/,
  );
  refused(verifyListSignature(signed.xml, trustOf(signer.certPath)), 'signer_untrusted', /is not a pinned --signer/);
  accepted(verifyListSignature(signed.xml, caTrust([outsiderCa.certPath])));
  refused(verifyListSignature(signed.xml, { pins: [], cas: [], cns: [], subjects: [] }), 'signer_untrusted', /no trusted signer/);
});

test('a signer expired today but valid at DateDeGeneration is accepted', (t) => {
  const { expired, bundlePath } = getPki();
  assert.ok(new Date(new X509Certificate(expired.certPem).validTo).getTime() < Date.now(), 'fixture must be expired now');
  const signed = signedOrSkip(t, GENERATED, expired);
  if (signed === null) return;
  const pinned = verifyListSignature(signed.xml, signed.pinned);
  accepted(pinned);
  assert.equal(pinned.signer.validTo, '2025-06-01T00:00:00.000Z');
  accepted(verifyListSignature(signed.xml, caTrust([bundlePath])));
});

test('a signer not yet valid, or already expired, at DateDeGeneration is refused', (t) => {
  const { expired, bundlePath } = getPki();
  const after = signedOrSkip(t, '2025-07-01T00:00:00Z', expired);
  if (after === null) return;
  refused(verifyListSignature(after.xml, after.pinned), 'signer_not_valid_at_generation', /2025-07-01T00:00:00/);
  refused(verifyListSignature(after.xml, caTrust([bundlePath])), 'signer_not_valid_at_generation');
  const before = signedOrSkip(t, '2024-05-31T23:59:59Z', expired);
  if (before === null) return;
  refused(verifyListSignature(before.xml, before.pinned), 'signer_not_valid_at_generation', /valid from 2024-06-01/);
});

test('a signed but impossible DateDeGeneration is refused', (t) => {
  for (const date of ['2025-02-30T00:00:00Z', '28/02/2025', '2025-02-28T15:42:07+01:00']) {
    const signed = signedOrSkip(t, date);
    if (signed === null) return;
    refused(verifyListSignature(signed.xml, signed.pinned), 'generation_date_invalid');
  }
});

test('ANS-style base64 with &#13; line breaks, a ds: prefix declared on the root, comments and CDATA are accepted', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  // SignatureValue and KeyInfo are outside SignedInfo's digest: rewriting their line breaks keeps it valid.
  const crlf = signed.xml.replace(
    /(<(SignatureValue|X509Certificate)>)([^<]*)/g,
    (_m, open: string, _n, body: string) => open + body.replace(/\n/g, '&#13;\n'),
  );
  assert.match(crlf, /&#13;\n/);
  accepted(verifyListSignature(crlf, signed.pinned));

  // Exclusive c14n must render the namespace SignedInfo inherits from the root.
  const unsigned = buildListXml(ENTRIES, GENERATED).replace(
    '<ListeBlancheMSSante ',
    `<ListeBlancheMSSante xmlns:ds="${ALGORITHMS.enveloped.split('#')[0]}#" `,
  );
  const prefixed = variant(t, { prefix: 'ds', declareNamespace: false }, [], unsigned);
  if (prefixed === null) return;
  assert.match(prefixed, /<ds:Signature>/);
  accepted(verifyListSignature(prefixed, signed.pinned));

  // Comments and CDATA do not change the canonical form (c14n without comments).
  const commented = signed.xml.replace('<Nom>alpha.mssante.fr</Nom>', '<Nom>alpha<!-- note -->.mssante.fr</Nom><!-- after -->');
  accepted(verifyListSignature(commented, signed.pinned));
  const cdata = signed.xml.replace('<Nom>beta.mssante.fr</Nom>', '<Nom><![CDATA[beta.mssante.fr]]></Nom>');
  accepted(verifyListSignature(cdata, signed.pinned));
  // CR LF line ends are normalised by every XML parser.
  accepted(verifyListSignature(signed.xml.replace(/\n/g, '\r\n'), signed.pinned));
});

test('XML 1.0 text: a signed CR (&#13;) and U+2028 are data, as for the signer', (t) => {
  if (toolOrSkip(t, 'xmlsec1') === null) return;
  const { signer } = getPki();
  const unsigned = buildListXml(ENTRIES, GENERATED)
    .replace('<Description>Domaine de messagerie MSSanté alpha', '<Description>Domaine&#13; de messagerie MSSanté alpha')
    .replace('<Description>Domaine de messagerie MSSanté beta', '<Description>Domaine\u2028de messagerie MSSanté beta');
  const xml = signList(unsigned, signer);
  assert.match(xml, /Domaine(&#13;|&#xD;) de/);
  accepted(verifyListSignature(xml, trustOf(signer.certPath)));
  // U+2028 is not a line end in XML 1.0: swapping it for LF changes the signed text.
  refused(
    verifyListSignature(xml.replace('Domaine\u2028de', 'Domaine\nde'), trustOf(signer.certPath)),
    'signature_digest_mismatch',
  );
});

test('tampering: one changed character, a changed SignatureValue', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const oneChar = signed.xml.replace('<Nom>beta.mssante.fr</Nom>', '<Nom>bete.mssante.fr</Nom>');
  assert.notEqual(oneChar, signed.xml);
  refused(verifyListSignature(oneChar, signed.pinned), 'signature_digest_mismatch');

  const badValue = signed.xml.replace(/<SignatureValue>(.)/, (_m, c: string) => `<SignatureValue>${c === 'A' ? 'B' : 'A'}`);
  assert.notEqual(badValue, signed.xml);
  refused(verifyListSignature(badValue, signed.pinned), 'signature_invalid');

  const dn = signed.xml.replace('O=GIP ALPHA', 'O=GIP ALPHA ');
  refused(verifyListSignature(dn, signed.pinned), 'signature_digest_mismatch');
});

test('signature wrapping: content moved beside a valid signature is refused', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const forged =
    '<ListeDomaines><Domaine><Nom>evil.fr</Nom><DNCertificatOperateur>CN=evil</DNCertificatOperateur></Domaine></ListeDomaines>';
  const signature = /<Signature[\s\S]*<\/Signature>/.exec(signed.xml)?.[0] ?? '';
  assert.ok(signature.length > 0);

  // The original ListeDomaines wrapped in an unknown element, a forged one beside it.
  const wrapped = signed.xml
    .replace('<ListeDomaines>', '<Archive><ListeDomaines>')
    .replace('</ListeDomaines>', `</ListeDomaines></Archive>${forged}`);
  refused(verifyListSignature(wrapped, signed.pinned), 'signature_digest_mismatch');

  // The whole signed document moved inside a forged one: the Signature is no longer the root's child.
  const body = signed.xml.replace(/^<\?xml[^>]*\?>\s*/, '');
  const nested = `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>2030-01-01T00:00:00Z</DateDeGeneration>${forged}<Archive>${body}</Archive></ListeBlancheMSSante>`;
  refused(verifyListSignature(nested, signed.pinned), 'signature_profile', /not a child of the root/);

  // A forged list carrying a copy of the genuine Signature.
  const copied = `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><DateDeGeneration>${GENERATED}</DateDeGeneration>${forged}${signature}</ListeBlancheMSSante>`;
  refused(verifyListSignature(copied, signed.pinned), 'signature_digest_mismatch');

  // The Signature moved first: the enveloped digest still matches, the shape does not.
  const first = signed.xml.replace(signature, '').replace('<DateDeGeneration>', `${signature}<DateDeGeneration>`);
  refused(verifyListSignature(first, signed.pinned), 'signature_profile', /last child/);

  // Anything after the Signature inside the root.
  refused(
    verifyListSignature(signed.xml.replace('</Signature>', `</Signature>${forged}`), signed.pinned),
    'signature_profile',
    /last child/,
  );
  refused(verifyListSignature(signed.xml.replace('</Signature>', '</Signature>text'), signed.pinned), 'signature_profile');
  refused(verifyListSignature(signed.xml.replace('</Signature>', '</Signature><!-- c -->'), signed.pinned), 'signature_profile');
});

test('a second Signature anywhere is refused', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const signature = /<Signature[\s\S]*<\/Signature>/.exec(signed.xml)?.[0] ?? '';
  refused(
    verifyListSignature(signed.xml.replace('</Signature>', `</Signature>${signature}`), signed.pinned),
    'signature_profile',
    /2 Signature/,
  );
  refused(
    verifyListSignature(signed.xml.replace('<ListeDomaines>', `<ListeDomaines>${signature}`), signed.pinned),
    'signature_profile',
    /2 Signature/,
  );
  // A stray XMLDSig element outside the Signature.
  const stray = signed.xml.replace('<ListeDomaines>', `<ListeDomaines><SignedInfo xmlns="http://www.w3.org/2000/09/xmldsig#"/>`);
  refused(verifyListSignature(stray, signed.pinned), 'signature_profile', /outside a Signature/);
});

test('genuinely signed lists outside the ANS profile are refused', (t) => {
  const sha1 = variant(t, { signatureMethod: ALGORITHMS.rsaSha1 });
  if (sha1 === null) return;
  const trust = trustOf(getPki().signer.certPath);
  refused(verifyListSignature(sha1, trust), 'signature_profile', /rsa-sha1/);
  refused(verifyListSignature(variant(t, { digestMethod: ALGORITHMS.sha1 }) ?? '', trust), 'signature_profile', /DigestMethod/);
  refused(
    verifyListSignature(variant(t, { transforms: [ALGORITHMS.enveloped, ALGORITHMS.c14n, ALGORITHMS.excC14n] }) ?? '', trust),
    'signature_profile',
    /Transforms must hold exactly Transform, Transform; found Transform, Transform, Transform/,
  );
  refused(
    verifyListSignature(variant(t, { transforms: [ALGORITHMS.enveloped, ALGORITHMS.c14n] }) ?? '', trust),
    'signature_profile',
    /REC-xml-c14n/,
  );
  const byId = variant(
    t,
    { referenceUri: '#liste' },
    [],
    buildListXml(ENTRIES, GENERATED).replace('<ListeDomaines>', '<ListeDomaines xml:id="liste">'),
  );
  refused(verifyListSignature(byId ?? '', trust), 'signature_profile', /URI="#liste"/);
  refused(verifyListSignature(variant(t, { referenceUri: '#xpointer(/)' }) ?? '', trust), 'signature_profile', /xpointer/);
});

test('extra parts in the Signature are refused', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const check = (xml: string, detail: RegExp): void =>
    refused(verifyListSignature(xml, signed.pinned), 'signature_profile', detail);
  check(signed.xml.replace('<Signature ', '<Signature Id="s" '), /unexpected attribute "Id"/);
  check(signed.xml.replace('</KeyInfo>', '</KeyInfo><Object>x</Object>'), /Signature must hold exactly/);
  const cert = /<X509Certificate>[^<]*<\/X509Certificate>/.exec(signed.xml)?.[0] ?? '';
  check(signed.xml.replace(cert, cert + cert), /X509Data must hold exactly X509Certificate/);
  check(signed.xml.replace('<Reference URI="">', '<Reference URI="" Type="x">'), /unexpected attribute "Type"/);
  check(
    signed.xml.replace(
      '</Transforms>',
      '<Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><XPath>1</XPath></Transform></Transforms>',
    ),
    /Transforms must hold/,
  );
  check(signed.xml.replace('<DigestValue>', '<DigestValue><!-- x -->'), /comment inside DigestValue/);
  check(signed.xml.replace(/<DigestValue>[^<]*/, '<DigestValue>AAAA'), /not a SHA-256 digest/);
  check(signed.xml.replace(/<X509Certificate>[^<]*/, '<X509Certificate>AAAA'), /not a valid certificate/);
});

test('readers that could disagree: character references and processing instructions in signed content', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  // Same canonical form (the digest would match), different text for a generic parser.
  const charRef = signed.xml.replace('<Nom>alpha.mssante.fr</Nom>', '<Nom>&#97;lpha.mssante.fr</Nom>');
  refused(verifyListSignature(charRef, signed.pinned), 'signature_profile', /character reference "&#97;/);
  const pi = signed.xml.replace('<Nom>alpha.mssante.fr</Nom>', '<Nom>alpha.mssante.fr<?evil x?></Nom>');
  refused(verifyListSignature(pi, signed.pinned), 'signature_profile', /processing instruction/);
  const prologPi = signed.xml.replace('?>', '?><?xml-stylesheet href="x"?>');
  refused(verifyListSignature(prologPi, signed.pinned), 'signature_profile', /processing instruction/);
});

test('DOCTYPE, entity bomb, truncated and malformed files', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const bomb =
    '<!DOCTYPE ListeBlancheMSSante [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">' +
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>';
  const withBomb = signed.xml.replace('?>', `?>${bomb}`).replace('<Description>', '<Description>&d;');
  refused(verifyListSignature(withBomb, signed.pinned), 'doctype_forbidden');
  refused(verifyListSignature(signed.xml.replace('?>', '?><!DOCTYPE ListeBlancheMSSante>'), signed.pinned), 'doctype_forbidden');

  // A copy stopped before the closing root tag, and one stopped mid-entry (the real-world failure).
  refused(
    verifyListSignature(signed.xml.slice(0, signed.xml.lastIndexOf('</ListeBlancheMSSante>')), signed.pinned),
    'xml_malformed',
  );
  refused(verifyListSignature(signed.xml.slice(0, signed.xml.indexOf('</Domaine>')), signed.pinned), 'xml_malformed');
  refused(verifyListSignature(`${signed.xml}<ListeBlancheMSSante/>`, signed.pinned), 'xml_malformed');
  refused(verifyListSignature(`${signed.xml}garbage`, signed.pinned), 'xml_malformed');
  refused(verifyListSignature(signed.xml.replace('<Nom>alpha', '<Nom>&nbsp;alpha'), signed.pinned), 'xml_malformed');
  refused(verifyListSignature('', signed.pinned), 'xml_malformed');
  refused(verifyListSignature('not xml at all', signed.pinned), 'xml_malformed');
});

test('an unsigned list: signature_missing, and isSigned() says so', (t) => {
  const { signer } = getPki();
  const unsigned = buildListXml(ENTRIES, GENERATED);
  assert.equal(isSigned(unsigned), false);
  refused(verifyListSignature(unsigned, trustOf(signer.certPath)), 'signature_missing');
  // A Signature in another namespace is not an XMLDSig signature.
  const fake = unsigned.replace('</ListeDomaines>', '</ListeDomaines><Signature>x</Signature>');
  assert.equal(isSigned(fake), false);
  refused(verifyListSignature(fake, trustOf(signer.certPath)), 'signature_missing');
  t.diagnostic('isSigned is a byte scan: a signed list always goes through verifyListSignature');
});

test('loadSignerTrust reads one or several certificates per file and explains failures', () => {
  const { bundlePath, signer, root, inter } = getPki();
  const pinned = loadSignerTrust([signer.certPath]);
  assert.deepEqual(
    pinned.pins.map((c) => c.certificate.fingerprint256),
    [new X509Certificate(signer.certPem).fingerprint256],
  );
  const cas = loadSignerTrust({ signer: [], signerCa: [bundlePath], signerCn: ['alb.test.fr'], signerSubject: [] });
  assert.deepEqual(
    cas.cas.map((c) => c.certificate.fingerprint256),
    [root, inter].map((i) => new X509Certificate(i.certPem).fingerprint256),
  );
  const dir = mkdtempSync(join(tmpdir(), 'mssante-badpem-'));
  assert.throws(() => loadSignerTrust([join(dir, 'missing.pem')]), /--signer .*missing\.pem: cannot read/);
  writeFileSync(join(dir, 'key.pem'), signer.keyPem);
  assert.throws(() => loadSignerTrust([join(dir, 'key.pem')]), /key\.pem: no PEM certificate/);
  const broken = signer.certPem.replace(/\n[A-Za-z0-9+/]{10}/, '\n!!!!!!!!!!');
  writeFileSync(join(dir, 'broken.pem'), `${root.certPem}${broken}`);
  assert.throws(
    () => loadSignerTrust([join(dir, 'broken.pem')]),
    /broken\.pem: certificate #2 is not a valid X\.509 certificate/,
  );
});

// ------------------------------------------------------------------ trust modes (issue #11)

function loadError(config: { signer?: string[]; signerCa?: string[]; signerCn?: string[]; signerSubject?: string[] }): string {
  try {
    loadSignerTrust({
      signer: config.signer ?? [],
      signerCa: config.signerCa ?? [],
      signerCn: config.signerCn ?? [],
      signerSubject: config.signerSubject ?? [],
    });
  } catch (error) {
    return (error as Error).message;
  }
  assert.fail('expected loadSignerTrust to refuse this configuration');
}

test('--signer pins end-entity certificates only: a CA, or a bundle holding the signer and its CA, is refused', () => {
  const { inter, root, mixedPath, bundlePath } = getPki();
  assert.match(
    loadError({ signer: [inter.certPath] }),
    /is a CA certificate \(basicConstraints CA:TRUE\).*--signer-ca PEM with --signer-cn NAME/,
  );
  assert.match(loadError({ signer: [root.certPath] }), /AC RACINE TEST-SANTE.*is a CA certificate/);
  assert.match(
    loadError({ signer: [mixedPath] }),
    /signer-and-ca\.pem: certificate #2 .*AC TEST-SANTE ORGANISATIONS.*is a CA certificate/,
  );
  assert.match(loadError({ signer: [bundlePath] }), /certificate #1 .* is a CA certificate/);
});

test('--signer refuses to pin a certificate that cannot sign (TLS-only EKU, no signing key usage)', () => {
  const { attackerTls, encipherOnly } = getPki();
  assert.match(
    loadError({ signer: [attackerTls.certPath] }),
    /cannot sign a list: its extended key usage \(serverAuth, clientAuth\) is limited to TLS/,
  );
  assert.match(
    loadError({ signer: [encipherOnly.certPath] }),
    /cannot sign a list: its key usage \(keyEncipherment, dataEncipherment\) allows neither digitalSignature nor nonRepudiation/,
  );
});

test('--signer-ca needs --signer-cn or --signer-subject, and only CA certificates; a constraint needs a CA', () => {
  const { inter, signer } = getPki();
  assert.match(
    loadError({ signerCa: [inter.certPath] }),
    /--signer-ca needs an identity constraint: add --signer-cn NAME .*alb\.mssante\.fr.*--signer-subject DN/,
  );
  assert.match(
    loadError({ signerCa: [signer.certPath], signerCn: ['alb.test.fr'] }),
    /is not a CA certificate .*pin a signer certificate with --signer PEM/,
  );
  assert.match(loadError({ signer: [signer.certPath], signerCn: ['alb.test.fr'] }), /give the CA with --signer-ca PEM/);
  assert.match(
    loadError({ signerCa: [inter.certPath], signerSubject: ['not a dn'] }),
    /--signer-subject "not a dn": not a distinguished name/,
  );
  assert.match(loadError({ signerCa: [inter.certPath], signerCn: ['  '] }), /--signer-cn: empty name/);
});

test('CA mode: the signer must carry the configured CN or subject (normalised), else signer_constraint', (t) => {
  const signed = signedOrSkip(t);
  if (signed === null) return;
  const { inter } = getPki();
  const byCn = verifyListSignature(signed.xml, caTrust([inter.certPath], { cn: ['ALB.Test.FR'] }));
  accepted(byCn);
  assert.match(
    byCn.signer.matched,
    /^CA .*AC TEST-SANTE ORGANISATIONS \(--signer-ca .*inter\.crt\) \+ --signer-cn alb\.test\.fr$/,
  );
  // The list's spelling: CN first, odd spaces, `Hauts-de-Seine(92)`; the certificate's is C first.
  const subject = 'CN=alb.test.fr, OU=347976684200724 ,O=TEST  LISTES,ST=Hauts-de-Seine(92),C=FR';
  const bySubject = verifyListSignature(signed.xml, caTrust([inter.certPath], { subject: [subject] }));
  accepted(bySubject);
  assert.match(bySubject.signer.matched, /\+ --signer-subject CN=alb\.test\.fr/);
  refused(
    verifyListSignature(signed.xml, caTrust([inter.certPath], { cn: ['alb.mssante.fr'] })),
    'signer_constraint',
    /is not the configured signer \(CN alb\.mssante\.fr\)/,
  );
  refused(
    verifyListSignature(
      signed.xml,
      caTrust([inter.certPath], { subject: ['CN=alb.test.fr,OU=347976684200724,O=OTHER,ST=Hauts-de-Seine (92),C=FR'] }),
    ),
    'signer_constraint',
  );
  // A pin and a CA together (rotation): the pin matches first and says so.
  const both = verifyListSignature(
    signed.xml,
    loadSignerTrust({
      signer: [getPki().signer.certPath],
      signerCa: [inter.certPath],
      signerCn: ['alb.test.fr'],
      signerSubject: [],
    }),
  );
  accepted(both);
  assert.equal(both.signer.trustedBy, 'pinned');
  assert.match(both.signer.matched, /^pinned signer .*signer\.crt$/);
});

test("the attacker's TLS certificate from the signer's CA never signs a list", (t) => {
  const { attackerTls, tlsWithSignerCn, inter } = getPki();
  if (toolOrSkip(t, 'xmlsec1') === null) return;
  const forged = signList(buildListXml([{ nom: 'victim.mssante.fr', dn: attackerTls.subjectRfc2253 }], GENERATED), attackerTls);
  // The hole of issue #11: the CA alone used to let it through.
  const byConstraint = verifyListSignature(forged, caTrust([inter.certPath]));
  refused(byConstraint, 'signer_constraint', /O=ATTACKER/);
  assert.equal(
    byConstraint.ok ? null : byConstraint.keyInfo?.fingerprint256,
    new X509Certificate(attackerTls.certPem).fingerprint256,
  );
  refused(verifyListSignature(forged, trustOf(getPki().signer.certPath)), 'signer_untrusted');
  // Even with the signer's CN (a CA mistake, or a CN constraint too loose), a TLS-only certificate is refused.
  const sameCn = signList(buildListXml(ENTRIES, GENERATED), tlsWithSignerCn);
  refused(verifyListSignature(sameCn, caTrust([inter.certPath])), 'signer_key_usage', /limited to TLS/);
});

test('key usage: without digitalSignature/nonRepudiation refused; without the extensions allowed', (t) => {
  const { encipherOnly, noExtensions, inter } = getPki();
  if (toolOrSkip(t, 'xmlsec1') === null) return;
  const enc = signList(buildListXml(ENTRIES, GENERATED), encipherOnly);
  refused(
    verifyListSignature(enc, caTrust([inter.certPath])),
    'signer_key_usage',
    /allows neither digitalSignature nor nonRepudiation/,
  );
  const bare = signList(buildListXml(ENTRIES, GENERATED), noExtensions);
  accepted(verifyListSignature(bare, caTrust([inter.certPath])));
});

test('the real list: CA mode with CN alb.mssante.fr accepts it; other CNs and the CA as --signer do not', (t) => {
  const xml = realOrSkip(t);
  if (xml === null) return;
  const ca = IGC_ORGANISATIONS_CA;
  const verdict = verifyListSignature(
    xml,
    loadSignerTrust({ signer: [], signerCa: [ca], signerCn: ['alb.mssante.fr'], signerSubject: [] }),
  );
  accepted(verdict);
  assert.equal(verdict.signer.trustedBy, 'ca');
  assert.match(verdict.signer.matched, /AC IGC-SANTE ELEMENTAIRE ORGANISATIONS .* \+ --signer-cn alb\.mssante\.fr/);
  refused(
    verifyListSignature(
      xml,
      loadSignerTrust({ signer: [], signerCa: [ca], signerCn: ['mx.some-operator.fr'], signerSubject: [] }),
    ),
    'signer_constraint',
  );
  assert.match(loadError({ signer: [ca] }), /is a CA certificate/);
});
