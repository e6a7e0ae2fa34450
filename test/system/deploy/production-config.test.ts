/**
 * deploy/config/production.json and deploy/igc-sante/ as shipped: the settings are valid, name the
 * real endpoint and the shipped CA files, the README's fingerprints are the files', and a daemon
 * run with that very file (the URL swapped for a local HTTPS server of a test PKI, whose CA is
 * then the download's --ca-file) verifies the real ANS list with the shipped IGC-Santé CA + CN.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { resolveConfig } from '../../../src/config.js';
import { startDaemon } from '../../support/daemon.js';
import { listInForce, metricNow, tempDir } from '../../support/faults.js';
import { REAL_LIST, REPO_ROOT, realListOrSkip } from '../../support/fixtures.js';
import { runCli } from '../../support/cli.js';
import { startHttpsListServer } from '../../support/https-server.js';

const PRODUCTION = join(REPO_ROOT, 'deploy', 'config', 'production.json');
const IGC_DIR = join(REPO_ROOT, 'deploy', 'igc-sante');
const INSTALLED_IGC_DIR = '/etc/mssante-policyd/igc-sante/';

type Settings = Record<string, unknown>;
const shipped = (): Settings => JSON.parse(readFileSync(PRODUCTION, 'utf8')) as Settings;

/** An installed path of a shipped CA file → that file in the repository. */
function inRepo(path: string): string {
  assert.ok(path.startsWith(INSTALLED_IGC_DIR), `${path} is under ${INSTALLED_IGC_DIR}`);
  const file = join(IGC_DIR, basename(path));
  assert.ok(existsSync(file), `${file} is shipped`);
  return file;
}

test('production.json: valid settings, the real endpoint, the shipped IGC-Sante CA + CN alb.mssante.fr, the state dir', () => {
  const s = shipped();
  assert.equal(s['whitelist'], 'https://espacedeconfiance.mssante.fr/listeblanchemssante.xml');
  assert.deepEqual(s['signer-cn'], ['alb.mssante.fr']);
  assert.equal(s['signer'], undefined, 'no pinned leaf: the 2023-2026 signer has expired; CA + CN survives the rotation');
  assert.equal(s['state-dir'], '/var/lib/mssante-policyd');
  const signerCa = (s['signer-ca'] as string[]).map(inRepo);
  assert.deepEqual(
    signerCa.map((p) => new X509Certificate(readFileSync(p)).subject.split('\n').pop()),
    ['CN=AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'],
  );
  inRepo(s['ca-file'] as string);
  const config = resolveConfig(new Map(), {}, PRODUCTION);
  assert.equal(config.maxListAgeDays, 30);
  assert.equal(config.allowUnsigned, false);
  assert.equal(config.stateDir, '/var/lib/mssante-policyd');
});

test("deploy/igc-sante: CA certificates only, and the README's SHA-256 fingerprints are theirs", () => {
  const readme = readFileSync(join(IGC_DIR, 'README.md'), 'utf8');
  const listed = new Set([...readme.matchAll(/`((?:[0-9A-F]{2}:){31}[0-9A-F]{2})`/g)].map((m) => m[1]));
  let count = 0;
  for (const file of [
    'ac-igc-sante-elementaire-organisations.pem',
    'ac-racine-igc-sante-elementaire.pem',
    'chaine-igc-sante-2021.pem',
  ]) {
    const pem = readFileSync(join(IGC_DIR, file), 'utf8');
    assert.doesNotMatch(pem, /PRIVATE KEY/);
    for (const block of pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []) {
      const cert = new X509Certificate(block);
      assert.equal(cert.ca, true, `${file}: ${cert.subject} is a CA certificate`);
      assert.ok(listed.has(cert.fingerprint256), `${file}: ${cert.fingerprint256} is in the README`);
      count++;
    }
  }
  assert.equal(count, 10);
});

test('deploy/igc-sante/README: each fingerprint it lists is the one of the shipped file (and place) it names; no development notes', () => {
  const readme = readFileSync(join(IGC_DIR, 'README.md'), 'utf8');
  const fingerprints = (file: string): string[] =>
    (readFileSync(join(IGC_DIR, file), 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []).map(
      (block) => new X509Certificate(block).fingerprint256,
    );
  const perFile = [...readme.matchAll(/^\| `([a-z0-9-]+\.pem)` \|.*\| `((?:[0-9A-F]{2}:){31}[0-9A-F]{2})` \|$/gm)];
  assert.deepEqual(perFile.map((m) => m[1]).sort(), [
    'ac-igc-sante-elementaire-organisations.pem',
    'ac-racine-igc-sante-elementaire.pem',
  ]);
  for (const [, file, fp] of perFile) assert.deepEqual(fingerprints(file!), [fp], `${file}: the README's fingerprint`);
  // The bundle: one row per certificate, in file order, the CN named as in the certificate.
  const rows = [...readme.matchAll(/^\| (\d+) \| ([A-Z -]+) \| `((?:[0-9A-F]{2}:){31}[0-9A-F]{2})` \|$/gm)];
  const bundle = (
    readFileSync(join(IGC_DIR, 'chaine-igc-sante-2021.pem'), 'utf8').match(
      /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g,
    ) ?? []
  ).map((block) => new X509Certificate(block));
  assert.equal(rows.length, bundle.length);
  rows.forEach((row, i) => {
    assert.equal(Number(row[1]), i + 1);
    assert.equal(row[3], bundle[i]!.fingerprint256, `bundle certificate #${i + 1}`);
    assert.equal(`CN=${row[2]}`, bundle[i]!.subject.split('\n').pop(), `bundle certificate #${i + 1}: its CN`);
  });
  // Every fingerprint on the page belongs to a shipped certificate.
  const shipped = new Set([...bundle.map((c) => c.fingerprint256), ...perFile.flatMap((m) => fingerprints(m[1]!))]);
  for (const m of readme.matchAll(/(?:[0-9A-F]{2}:){31}[0-9A-F]{2}/g))
    assert.ok(shipped.has(m[0]), `${m[0]} is a shipped certificate's`);
  // Written for operators: provenance and an independent check, not the project's workspace.
  assert.match(readme, /http:\/\/igc-sante\.esante\.gouv\.fr\/AC\//);
  assert.match(readme, /openssl x509 -noout -subject -fingerprint -sha256/);
  assert.match(readme, /openssl pkcs7 -inform DER -in Chaine_de_certification-IGC-Sante\.p7b -print_certs/);
  assert.doesNotMatch(readme, /workspace|\.\.\/shared|fixtures/);
});

test('a daemon run with production.json (URL swapped for a local HTTPS server) verifies the real list with the shipped CA + CN', async (t) => {
  const real = realListOrSkip(t);
  if (real === null) return;
  const server = await startHttpsListServer();
  t.after(() => server.close());
  server.setBehaviour({ kind: 'serve', body: readFileSync(REAL_LIST), etag: '"real"' });
  const s = shipped();
  const dir = tempDir('production');
  const config = join(dir, 'config.json');
  // Swapped: the URL, and with it the CA of its TLS (a local server cannot present the ANS's
  // certificate). Installed paths point at the repository's copies. Everything else as shipped.
  writeFileSync(
    config,
    JSON.stringify({
      ...s,
      whitelist: server.url,
      'ca-file': server.caFile,
      'signer-ca': (s['signer-ca'] as string[]).map(inRepo),
    }),
  );
  const trust = ['--signer-ca', inRepo((s['signer-ca'] as string[])[0] as string), '--signer-cn', 'alb.mssante.fr'];

  // The real list dates from 2025: older than --max-list-age 30, so the operator accepts that very list first.
  const stateDir = tempDir('production-state');
  const accepted = runCli(['check', real.list, ...trust, '--state-dir', stateDir, '--accept']);
  assert.equal(accepted.code, 0, accepted.stdout + accepted.stderr);
  assert.match(
    accepted.stdout,
    /^signer matched: CA .*AC IGC-SANTE ELEMENTAIRE ORGANISATIONS .*\+ --signer-cn alb\.mssante\.fr$/m,
  );

  const daemon = await startDaemon({ whitelist: server.url, stateDir, readyTimeoutMs: 120_000, extraArgs: ['--config', config] });
  t.after(() => daemon.stop('SIGKILL'));
  const status = await listInForce(daemon);
  assert.equal(status.generatedAt, '2025-02-28T15:42:07Z');
  assert.equal(status.domains, 4944);
  assert.match(String((status.signer as { subject?: string } | null)?.subject), /CN=alb\.mssante\.fr/);
  assert.equal(
    await metricNow(daemon, 'whitelist_signer_not_after_timestamp_seconds'),
    Date.parse('2026-08-23T13:54:23Z') / 1000,
  );
  assert.equal(await daemon.stop(), 0);
});
