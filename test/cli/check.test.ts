import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../src/config.js';
import { ACCEPT_FILE, STATE_LIST_FILE } from '../../src/whitelist/state.js';
import { runCli } from '../support/cli.js';
import { realListOrSkip } from '../support/fixtures.js';
import { buildListXml } from '../support/xmlsec.js';

/** A state directory holding `list` as the daemon's stored list. */
function stateWith(listPath: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'state-'));
  writeFileSync(join(dir, STATE_LIST_FILE), readFileSync(listPath));
  return dir;
}

/** An unsigned list of one domain, generated long before the demo list. */
function olderSmallList(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'check-')), 'older.xml');
  writeFileSync(path, buildListXml([{ nom: 'seul.mssante.test', dn: 'CN=mx.seul.test,OU=1,O=SEUL,ST=Paris (75),C=FR' }], '2024-01-01T00:00:00Z'));
  return path;
}

describe('mssante-policyd check', () => {
  it('loads the real signed list: 6 494 entries, signature valid at generation, DN variants reported', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const { code, stdout } = runCli(['check', real.list, '--signer', real.signer, '--json']);
    assert.equal(code, 0);
    const report = JSON.parse(stdout);
    assert.equal(report.usable, true);
    assert.equal(report.signature.verified, true);
    assert.match(report.signature.signer.subject, /CN=alb\.mssante\.fr/);
    assert.equal(report.generatedAt, '2025-02-28T15:42:07Z');
    assert.deepEqual(report.entries, { total: 6494, accepted: 6494, skipped: 0 });
    assert.equal(report.domains, 4944);
    assert.equal(report.dnSpellingVariants.length, 10);
    const sesan = report.dnSpellingVariants.find((g: { spellings: string[] }) => g.spellings.some((s) => s.includes('smtp-1.sesan')));
    assert.ok(sesan.spellings.some((s: string) => s.includes('Paris(75)')));
    assert.ok(sesan.spellings.some((s: string) => s.includes('Paris (75)')));
  });

  it('prints a readable report for the demo list, with the junk entry skipped', () => {
    const { code, stdout } = runCli(['check', DEMO_WHITELIST, '--signer', DEMO_SIGNER]);
    assert.equal(code, 0);
    assert.match(stdout, /signature: VALID/);
    assert.match(stdout, /skipped #3 _: field_placeholder/);
    assert.match(stdout, /USABLE\n$/);
  });

  it('exits 1 with the reason for a truncated copy and for a list with another signer', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'check-'));
    const truncated = join(dir, 'truncated.xml');
    writeFileSync(truncated, readFileSync(DEMO_WHITELIST, 'utf8').slice(0, 1500));
    const r1 = runCli(['check', truncated, '--signer', DEMO_SIGNER]);
    assert.equal(r1.code, 1);
    assert.match(r1.stdout, /UNUSABLE: /);
    const real = realListOrSkip(t);
    if (real === null) return;
    const r2 = runCli(['check', DEMO_WHITELIST, '--signer', real.signer, '--json']);
    assert.equal(r2.code, 1);
    assert.equal(JSON.parse(r2.stdout).failure.reason, 'signer_untrusted');
  });

  it('refuses to check without a signer unless --allow-unsigned', () => {
    const r = runCli(['check', DEMO_WHITELIST]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--signer/);
    const unsigned = runCli(['check', DEMO_WHITELIST, '--allow-unsigned']);
    assert.equal(unsigned.code, 0);
    assert.match(unsigned.stdout, /signature: NOT CHECKED/);
  });

  it('--accept records the list for the guard in the state directory', () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'state-'));
    const r = runCli(['check', DEMO_WHITELIST, '--signer', DEMO_SIGNER, '--state-dir', stateDir, '--accept', '--json']);
    assert.equal(r.code, 0);
    const report = JSON.parse(r.stdout);
    assert.equal(report.accepted, true);
    assert.equal(readFileSync(join(stateDir, ACCEPT_FILE), 'utf8').trim(), report.sha256);
  });

  it('reads --max-list-entries and --max-shrink through serve\'s table: a bad value is refused with serve\'s error', () => {
    for (const [flag, value] of [['--max-list-entries', 'abc'], ['--max-shrink', 'abc'], ['--max-shrink', '101'], ['--max-list-entries', '0']] as const) {
      const check = runCli(['check', DEMO_WHITELIST, '--signer', DEMO_SIGNER, flag, value]);
      const serve = runCli(['serve', '--whitelist', 'demo', flag, value, '--print-config']);
      assert.equal(check.code, 2, `${flag} ${value}: ${check.stdout}`);
      assert.equal(serve.code, 2);
      assert.equal(check.stderr.replace(/^check: /, ''), serve.stderr.replace(/^serve: /, ''), `${flag} ${value}`);
      assert.match(check.stderr, new RegExp(`^check: ${flag.slice(2)} \\(${flag}\\): `));
    }
  });

  it('exits 3 when the list is usable but the guard would refuse it against the stored list; 0 once accepted', () => {
    const stateDir = stateWith(DEMO_WHITELIST);
    const older = olderSmallList();
    const r = runCli(['check', older, '--allow-unsigned', '--state-dir', stateDir]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stdout, /guard against .*generated 2026-11-22T21:54:56Z\): refuse/);
    assert.match(r.stdout, /USABLE, BUT THE GUARD WOULD REFUSE IT \(exit 3\)/);
    assert.doesNotMatch(r.stdout, /^USABLE$/m);
    const json = runCli(['check', older, '--allow-unsigned', '--state-dir', stateDir, '--json']);
    assert.equal(json.code, 3);
    assert.equal(JSON.parse(json.stdout).guard.verdict, 'refuse');
    const accepted = runCli(['check', older, '--allow-unsigned', '--state-dir', stateDir, '--accept']);
    assert.equal(accepted.code, 0, accepted.stdout);
    // The same list against no stored list: nothing to refuse.
    assert.equal(runCli(['check', older, '--allow-unsigned']).code, 0);
  });

  it('takes state-dir and limits from --config, as serve would', () => {
    const stateDir = stateWith(DEMO_WHITELIST);
    const older = olderSmallList();
    const config = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'config.json');
    writeFileSync(config, JSON.stringify({ whitelist: 'https://example.test/l.xml', 'allow-unsigned': true, 'state-dir': stateDir, 'policy-listen': '127.0.0.1:10040' }));
    const r = runCli(['check', older, '--config', config, '--json']);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(JSON.parse(r.stdout).guard.against, new RegExp(stateDir));
    writeFileSync(config, JSON.stringify({ 'allow-unsigned': true, 'max-list-entries': 'abc' }));
    const bad = runCli(['check', older, '--config', config]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^check: max-list-entries \(config file\): expected a whole number/);
  });

  it('names the stored list even when another signer signed it', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    // Stored: the demo list (demo signer). Checked: the real list (ANS signer), older than it.
    const stateDir = stateWith(DEMO_WHITELIST);
    const r = runCli(['check', real.list, '--signer', real.signer, '--state-dir', stateDir, '--json']);
    const report = JSON.parse(r.stdout);
    assert.equal(report.usable, true);
    assert.equal(report.guard.against, `${stateDir} (generated 2026-11-22T21:54:56Z)`);
    assert.equal(report.guard.verdict, 'refuse');
    assert.equal(r.code, 3);
  });
});
