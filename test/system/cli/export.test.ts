/**
 * `mssante-policyd export --format postfix`: the static tables answer like the live socketmap ones
 * (postmap is the oracle), are written only from a verified list, and atomically.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../../src/config.js';
import { EXPORT_FILES, postfixTables, writeTablesAtomically } from '../../../src/frontends/socketmap/export.js';
import { SocketmapTables } from '../../../src/frontends/socketmap/maps.js';
import { runCli } from '../../support/cli.js';
import { realListOrSkip } from '../../support/fixtures.js';
import { buildIndex } from '../../support/index-builder.js';
import { toolOrSkip } from '../../support/tools.js';
import { BASE_ENTRIES, createListSigner, isoDays } from '../../support/faults.js';

const REJECT =
  'REJECT 5.7.1 Domaine destinataire hors espace de confiance MSSante / recipient domain outside the MSSante trust space';

function exportDemo(extra: string[] = []): { dir: string; code: number | null; stdout: string; stderr: string } {
  const dir = join(mkdtempSync(join(tmpdir(), 'mssante-export-')), 'maps');
  const r = runCli(['export', '--format', 'postfix', '--out', dir, DEMO_WHITELIST, '--signer', DEMO_SIGNER, ...extra]);
  return { dir, ...r };
}

function postmapConfig(): string {
  const dir = mkdtempSync(join(tmpdir(), 'mssante-postmap-'));
  writeFileSync(join(dir, 'main.cf'), 'compatibility_level = 3.6\n');
  return dir;
}

/** postmap -q: the value, or null when not found (exit 1 with no output). */
function query(bin: string, conf: string, table: string, key: string): string | null {
  const r = spawnSync(bin, ['-c', conf, '-q', key, table], { encoding: 'utf8', timeout: 60_000 });
  if (r.status === 1 && r.stdout === '') return null;
  assert.equal(r.status, 0, `${table} ${key}: ${r.stderr}`);
  return r.stdout.replace(/\n$/, '');
}

describe('mssante-policyd export --format postfix', () => {
  it('writes the four tables from the verified demo list, and nothing else', () => {
    const { dir, code, stdout, stderr } = exportDemo();
    assert.equal(code, 0, stderr);
    assert.deepEqual(readdirSync(dir).sort(), [...EXPORT_FILES].sort());
    assert.match(stdout, /3 domains, list generated 2026-11-22T21:54:56Z, signed by .*CN=demo-signer/);
    const transport = readFileSync(join(dir, 'mssante-transport'), 'utf8');
    assert.match(transport, /^demo-hopital\.mssante\.fr smtp-mssante:$/m);
    assert.match(transport, /^# sha256 [0-9a-f]{64}, generated 2026-11-22T21:54:56Z, 3 domains; do not edit$/m);
    assert.doesNotMatch(transport, /^_ /m, 'the junk entry is not exported');
  });

  it('takes the configured values', () => {
    const { dir, code } = exportDemo(['--tls-policy-value', 'verify', '--transport-value', 'relay:[relais.mssante.test]']);
    assert.equal(code, 0);
    assert.match(readFileSync(join(dir, 'mssante-tls-policy'), 'utf8'), /^demo-clinique\.mssante\.fr verify$/m);
    assert.match(
      readFileSync(join(dir, 'mssante-transport'), 'utf8'),
      /^demo-clinique\.mssante\.fr relay:\[relais\.mssante\.test\]$/m,
    );
  });

  it('writes nothing from a list whose signature fails, and needs a signer', () => {
    const work = mkdtempSync(join(tmpdir(), 'mssante-export-'));
    const tampered = join(work, 'tampered.xml');
    writeFileSync(
      tampered,
      readFileSync(DEMO_WHITELIST, 'utf8').replace('demo-clinique.mssante.fr', 'demo-clinique.attaquant.fr'),
    );
    const out = join(work, 'maps');
    const r = runCli(['export', '--format', 'postfix', '--out', out, tampered, '--signer', DEMO_SIGNER]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unusable/);
    assert.equal(existsSync(out), false);
    assert.equal(runCli(['export', '--format', 'postfix', '--out', out, DEMO_WHITELIST]).code, 2);
    assert.equal(runCli(['export', '--format', 'postfix', '--out', out, DEMO_WHITELIST, '--allow-unsigned']).code, 2);
    assert.equal(runCli(['export', '--format', 'csv', '--out', out, DEMO_WHITELIST, '--signer', DEMO_SIGNER]).code, 2);
    assert.equal(
      runCli([
        'export',
        '--format',
        'postfix',
        '--out',
        out,
        DEMO_WHITELIST,
        '--signer',
        DEMO_SIGNER,
        '--max-list-entries',
        'many',
      ]).code,
      2,
    );
    assert.equal(
      runCli([
        'export',
        '--format',
        'postfix',
        '--out',
        out,
        DEMO_WHITELIST,
        '--signer',
        DEMO_SIGNER,
        '--tls-policy-value',
        'a\nb',
      ]).code,
      2,
    );
    assert.equal(existsSync(out), false);
  });

  it('replaces files atomically: no temporary file is left, an old file is replaced whole', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mssante-export-'));
    writeFileSync(join(dir, 'mssante-transport'), 'old content\n');
    writeTablesAtomically(dir, { 'mssante-transport': 'new content\n' });
    assert.equal(readFileSync(join(dir, 'mssante-transport'), 'utf8'), 'new content\n');
    assert.deepEqual(readdirSync(dir), ['mssante-transport']);
  });

  it('writes both IDN forms and escapes the regexp', () => {
    const index = buildIndex([['hôpital-exemple.fr', 'CN=mx.a.fr,O=A,C=FR']]);
    const files = postfixTables(index, new SocketmapTables({ tlsPolicy: 'verify', transport: 'smtp:' }).values, 'test');
    assert.match(files['mssante-domain'], /^xn--hpital-exemple-0ob\.fr mx\.a\.fr$/m);
    assert.match(files['mssante-domain'], /^hôpital-exemple\.fr mx\.a\.fr$/m);
    assert.match(files['mssante-recipient-access.regexp'], /\(xn--hpital-exemple-0ob\\\.fr\|hôpital-exemple\\\.fr\)/);
  });

  it('postmap reads the exported tables and they answer like the live socketmap tables', (t: TestContext) => {
    const bin = toolOrSkip(t, 'postmap');
    if (bin === null) return;
    const { dir, code } = exportDemo();
    assert.equal(code, 0);
    const conf = postmapConfig();
    for (const name of ['mssante-domain', 'mssante-tls-policy', 'mssante-transport']) {
      const made: { status: number | null; stderr: string } = spawnSync(bin, ['-c', conf, `hash:${join(dir, name)}`], {
        encoding: 'utf8',
      });
      assert.equal(made.status, 0, made.stderr);
    }
    const hash = (name: string): string => `hash:${join(dir, name)}`;
    assert.equal(query(bin, conf, hash('mssante-domain'), 'demo-hopital.mssante.fr'), 'mx.demo-hopital.test');
    assert.equal(query(bin, conf, hash('mssante-domain'), 'DEMO-HOPITAL.mssante.fr'), 'mx.demo-hopital.test');
    assert.equal(
      query(bin, conf, hash('mssante-tls-policy'), 'pharmacie.demo-hopital.mssante.fr'),
      'secure match=hostname:nexthop:dot-nexthop',
    );
    assert.equal(query(bin, conf, hash('mssante-transport'), 'demo-clinique.mssante.fr'), 'smtp-mssante:');
    for (const key of ['autre.demo-hopital.mssante.fr', '.demo-hopital.mssante.fr', 'mssante.fr', '*']) {
      assert.equal(query(bin, conf, hash('mssante-transport'), key), null, key);
    }
    const access = `regexp:${join(dir, 'mssante-recipient-access.regexp')}`;
    assert.equal(query(bin, conf, access, 'dr.martin@demo-hopital.mssante.fr'), 'DUNNO');
    assert.equal(query(bin, conf, access, 'Dr.Martin+ext@PHARMACIE.demo-hopital.mssante.fr'), 'DUNNO');
    for (const key of [
      'dr.martin@autre.demo-hopital.mssante.fr',
      'x@mssante.fr',
      'x@demo-hopital.mssante.fr.attaquant.fr',
      'x@gmail.com',
    ]) {
      assert.equal(query(bin, conf, access, key), REJECT, key);
    }
  });

  it('exports the real list (4 944 domains) and postmap answers from it', (t: TestContext) => {
    const real = realListOrSkip(t);
    const bin = toolOrSkip(t, 'postmap');
    if (real === null || bin === null) return;
    const dir = join(mkdtempSync(join(tmpdir(), 'mssante-export-')), 'maps');
    const args = ['export', '--format', 'postfix', '--out', dir, real.list, '--signer', real.signer];
    // The 2025 list is older than the default 30 days: refused like check refuses it, until told.
    const refused = runCli(args, { timeoutMs: 120_000 });
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(refused.stderr, /unusable: list_too_old — generated 2025-02-28T15:42:07Z, \d+ days ago \(--max-list-age 30\)/);
    assert.equal(existsSync(dir), false);
    const r = runCli([...args, '--max-list-age', '0'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /4944 domains/);
    const conf = postmapConfig();
    const first = readFileSync(join(dir, 'mssante-transport'), 'utf8')
      .split('\n')
      .find((l) => !l.startsWith('#'))!
      .split(' ')[0]!;
    const access = `regexp:${join(dir, 'mssante-recipient-access.regexp')}`;
    assert.equal(query(bin, conf, access, `x@${first}`), 'DUNNO');
    assert.equal(query(bin, conf, access, `x@pas-liste.${first}`), REJECT);
  });

  it('applies the age rule like check: too old refused (exit 1, nothing written), unless 0, accepted, or a list is in force', (t: TestContext) => {
    if (toolOrSkip(t, 'xmlsec1') === null) return;
    const signer = createListSigner();
    t.after(() => signer.cleanup());
    const work = mkdtempSync(join(tmpdir(), 'mssante-export-age-'));
    const old = join(work, 'old.xml');
    writeFileSync(old, signer.sign(BASE_ENTRIES, isoDays(-45)));
    const exportOld = (out: string, extra: string[] = []): ReturnType<typeof runCli> =>
      runCli(['export', '--format', 'postfix', '--out', join(work, out), old, ...signer.trustArgs, ...extra]);

    const refused = exportOld('refused');
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(
      refused.stderr,
      /^export: .*old\.xml is unusable: list_too_old — generated .*, 45 days ago \(--max-list-age 30\)/,
    );
    assert.equal(existsSync(join(work, 'refused')), false, 'nothing written');
    // check says the same of the same list.
    const check = runCli(['check', old, ...signer.trustArgs]);
    assert.equal(check.code, 1);
    assert.match(check.stdout, /^UNUSABLE: list_too_old/m);

    assert.equal(exportOld('older-limit', ['--max-list-age', '60']).code, 0);
    assert.equal(exportOld('not-judged', ['--max-list-age', '0']).code, 0);
    // Accepted into a state dir with check --accept: exported from that state dir's point of view.
    const accepting = mkdtempSync(join(tmpdir(), 'mssante-export-state-'));
    assert.equal(runCli(['check', old, ...signer.trustArgs, '--state-dir', accepting, '--accept']).code, 0);
    assert.equal(exportOld('accepted', ['--state-dir', accepting]).code, 0);
    // A state dir that merely exists (no list in force, nothing accepted) exempts nothing.
    const empty = mkdtempSync(join(tmpdir(), 'mssante-export-state-'));
    assert.equal(exportOld('empty-state', ['--state-dir', empty]).code, 1);
    // MSSANTE_POLICYD_MAX_LIST_AGE is read like serve reads it.
    assert.equal(
      runCli(['export', '--format', 'postfix', '--out', join(work, 'env'), old, ...signer.trustArgs], {
        env: { MSSANTE_POLICYD_MAX_LIST_AGE: '0' },
      }).code,
      0,
    );
  });
});
