import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { readCertificateUsage, signingUsageProblem } from '../../../src/whitelist/x509-usage.js';
import { TestPki, type Usage } from '../../support/pki.js';
import { REAL_SIGNER } from '../../support/fixtures.js';
import { toolOrSkip } from '../../support/tools.js';

/** openssl's own reading of the two extensions, as our names. */
function opensslUsage(certPath: string): { ku: string[] | null; eku: string[] | null } {
  const text = execFileSync('openssl', ['x509', '-in', certPath, '-noout', '-ext', 'keyUsage,extendedKeyUsage'], {
    encoding: 'utf8',
  });
  const after = (title: string): string[] | null => {
    const m = new RegExp(`${title}:[^\\n]*\\n\\s+([^\\n]+)`).exec(text);
    return m === null ? null : (m[1] as string).split(',').map((x) => x.trim());
  };
  const kuNames: Record<string, string> = {
    'Digital Signature': 'digitalSignature',
    'Non Repudiation': 'nonRepudiation',
    'Key Encipherment': 'keyEncipherment',
    'Data Encipherment': 'dataEncipherment',
    'Key Agreement': 'keyAgreement',
    'Certificate Sign': 'keyCertSign',
    'CRL Sign': 'cRLSign',
  };
  const ekuOids: Record<string, string> = {
    'TLS Web Server Authentication': '1.3.6.1.5.5.7.3.1',
    'TLS Web Client Authentication': '1.3.6.1.5.5.7.3.2',
    'E-mail Protection': '1.3.6.1.5.5.7.3.4',
  };
  return {
    ku: after('X509v3 Key Usage')?.map((n) => kuNames[n] ?? n) ?? null,
    eku: after('X509v3 Extended Key Usage')?.map((n) => ekuOids[n] ?? n) ?? null,
  };
}

test('key usage and EKU read from DER agree with openssl for every test certificate profile', (t) => {
  if (toolOrSkip(t, 'openssl') === null) return;
  const pki = new TestPki();
  // EC keys: the extensions are what is compared, and an EC key is generated ~100 times faster.
  const ca = pki.createCa(
    'ca',
    [
      ['C', 'FR'],
      ['CN', 'usage test CA'],
    ],
    { keyType: 'ec' },
  );
  const profiles: Usage[] = ['client', 'server', 'tls', 'signing', 'encipherment', 'no-extensions'];
  const certs = [
    ca,
    ...profiles.map((u) =>
      pki.issue(
        u,
        [
          ['C', 'FR'],
          ['CN', `${u}.test`],
        ],
        ca,
        { usage: u, keyType: 'ec' },
      ),
    ),
  ];
  const real = REAL_SIGNER;
  const paths = [...certs.map((c) => c.certPath), ...(existsSync(real) ? [real] : [])];
  for (const path of paths) {
    const usage = readCertificateUsage(new X509Certificate(readFileSync(path)).raw);
    const expected = opensslUsage(path);
    assert.deepEqual(usage.keyUsage === null ? null : [...usage.keyUsage].sort(), expected.ku?.sort() ?? null, path);
    assert.deepEqual(usage.extendedKeyUsage, expected.eku, path);
  }
});

test('signing usage rule: signer profiles pass, TLS-only and non-signing key usage fail', () => {
  const ok = (ku: string[] | null, eku: string[] | null): string | null =>
    signingUsageProblem({ keyUsage: ku === null ? null : new Set(ku as never[]), extendedKeyUsage: eku });
  assert.equal(ok(['digitalSignature', 'nonRepudiation'], ['1.3.6.1.5.5.7.3.4']), null);
  assert.equal(ok(['nonRepudiation'], null), null);
  assert.equal(ok(null, null), null);
  assert.equal(ok(['digitalSignature'], ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.4']), null);
  assert.equal(ok(['digitalSignature'], ['2.5.29.37.0']), null);
  assert.match(ok(['digitalSignature', 'keyEncipherment'], ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']) ?? '', /limited to TLS/);
  assert.match(ok(['digitalSignature'], ['1.3.6.1.5.5.7.3.2']) ?? '', /limited to TLS/);
  assert.match(ok(['keyEncipherment'], ['1.3.6.1.5.5.7.3.4']) ?? '', /neither digitalSignature nor nonRepudiation/);
  assert.match(ok(['keyCertSign', 'cRLSign'], null) ?? '', /neither/);
  assert.match(ok(['digitalSignature'], []) ?? '', /empty/);
});

test('DER that cannot be walked is an error, not a pass', () => {
  assert.throws(() => readCertificateUsage(Buffer.from([0x30, 0x85, 1, 2, 3, 4, 5])), /cannot read the certificate's extensions/);
  assert.throws(() => readCertificateUsage(Buffer.from([0x30, 0x10, 0x30])), /cannot read the certificate's extensions/);
  assert.throws(() => readCertificateUsage(Buffer.from([0x04, 0x00])), /expected Certificate SEQUENCE/);
});
