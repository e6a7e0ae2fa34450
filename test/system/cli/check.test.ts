import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { mkdirSync } from 'node:fs';
import type { CheckReport } from '../../../src/cli.js';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../../src/config.js';
import { ACCEPT_FILE, STATE_LIST_FILE } from '../../../src/whitelist/state.js';
import { runCli, runPrintedCommand } from '../../support/cli.js';
import { BASE_ENTRIES, createListSigner, isoDays } from '../../support/faults.js';
import { toolOrSkip } from '../../support/tools.js';
import { realListOrSkip } from '../../support/fixtures.js';
import { buildListXml } from '../../support/xmlsec.js';

/** A state directory holding `list` as the daemon's stored list. */
/** `check` of the demo list, trusting the demo signer, against `stateDir` (and any extra flags). */
function checkDemo(stateDir: string, ...extra: string[]): ReturnType<typeof runCli> {
  return runCli(['check', DEMO_WHITELIST, '--signer', DEMO_SIGNER, '--max-list-age', '0', '--state-dir', stateDir, ...extra]);
}

function stateWith(listPath: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'state-'));
  writeFileSync(join(dir, STATE_LIST_FILE), readFileSync(listPath));
  return dir;
}

/** An unsigned list of one domain, generated long before the demo list. */
function olderSmallList(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'check-')), 'older.xml');
  writeFileSync(
    path,
    buildListXml([{ nom: 'seul.mssante.test', dn: 'CN=mx.seul.test,OU=1,O=SEUL,ST=Paris (75),C=FR' }], '2024-01-01T00:00:00Z'),
  );
  return path;
}

describe('mssante-policyd check', () => {
  it('loads the real signed list: 6 494 entries, signature valid at generation, DN variants reported', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const { code, stdout } = runCli(['check', real.list, '--signer', real.signer, '--max-list-age', '0', '--json']);
    assert.equal(code, 0);
    const report = JSON.parse(stdout) as CheckReport;
    assert.equal(report.usable, true);
    assert.ok(report.signature !== null);
    assert.equal(report.signature.verified, true);
    assert.match((report.signature.signer as { subject: string }).subject, /CN=alb\.mssante\.fr/);
    assert.equal(report.generatedAt, '2025-02-28T15:42:07Z');
    assert.deepEqual(report.entries, { total: 6494, accepted: 6494, skipped: 0 });
    assert.equal(report.domains, 4944);
    assert.equal(report.dnSpellingVariants.length, 10);
    const sesan = report.dnSpellingVariants.find((g) => g.spellings.some((s) => s.includes('smtp-1.sesan')));
    assert.ok(sesan !== undefined);
    assert.ok(sesan.spellings.some((s) => s.includes('Paris(75)')));
    assert.ok(sesan.spellings.some((s) => s.includes('Paris (75)')));
  });

  it('prints a readable report for the demo list, with the junk entry skipped', () => {
    const { code, stdout } = runCli(['check', DEMO_WHITELIST, '--signer', DEMO_SIGNER, '--max-list-age', '0']);
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
    assert.equal((JSON.parse(r2.stdout) as CheckReport).failure?.reason, 'signer_untrusted');
  });

  it('refuses to check without a signer unless --allow-unsigned', () => {
    const r = runCli(['check', DEMO_WHITELIST]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--signer/);
    const unsigned = runCli(['check', DEMO_WHITELIST, '--allow-unsigned', '--max-list-age', '0']);
    assert.equal(unsigned.code, 0);
    assert.match(unsigned.stdout, /signature: NOT CHECKED/);
  });

  it('--accept records the list for the guard in the state directory', () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'state-'));
    const r = checkDemo(stateDir, '--accept', '--json');
    assert.equal(r.code, 0);
    const report = JSON.parse(r.stdout) as CheckReport;
    assert.equal(report.accepted, true);
    assert.equal(readFileSync(join(stateDir, ACCEPT_FILE), 'utf8').trim(), report.sha256);
  });

  it('real material: CA + --signer-cn alb.mssante.fr → VALID, 6 494 entries; the signer, its fingerprint and expiry printed', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const r = runCli(['check', real.list, '--signer-ca', real.ca, '--signer-cn', 'alb.mssante.fr', '--max-list-age', '0']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^signature: VALID \(signer .*CN=alb\.mssante\.fr;.*trusted as ca\)$/m);
    assert.match(
      r.stdout,
      /^signer matched: CA .*CN=AC IGC-SANTE ELEMENTAIRE ORGANISATIONS \(--signer-ca .*\) \+ --signer-cn alb\.mssante\.fr$/m,
    );
    assert.match(
      r.stdout,
      /^signer SHA-256: A0:DE:16:CA:A6:49:6A:1A:35:C5:A1:3D:6B:AF:82:65:62:30:2A:FE:E1:9B:9D:38:A6:9D:D7:AA:4D:A8:D6:97$/m,
    );
    assert.match(r.stdout, /^signer expiry: 2026-08-23T13:54:23\.000Z, (in \d+ days|expired \d+ days ago)/m);
    assert.match(r.stdout, /^age: \d+ days \(not judged: --max-list-age 0\)$/m);
    assert.match(r.stdout, /^entries: 6494 in file, 6494 accepted, 0 skipped$/m);
    assert.match(r.stdout, /USABLE\n$/);
  });

  it('real material: the CA without --signer-cn, or given as --signer, is refused before any check', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const noCn = runCli(['check', real.list, '--signer-ca', real.ca, '--max-list-age', '0']);
    assert.notEqual(noCn.code, 0);
    assert.match(noCn.stderr, /--signer-ca needs an identity constraint: add --signer-cn NAME/);
    const caAsSigner = runCli(['check', real.list, '--signer', real.ca, '--max-list-age', '0']);
    assert.notEqual(caAsSigner.code, 0);
    assert.match(caAsSigner.stderr, /is a CA certificate \(basicConstraints CA:TRUE\)/);
    const otherCn = runCli([
      'check',
      real.list,
      '--signer-ca',
      real.ca,
      '--signer-cn',
      'mx.operator.fr',
      '--max-list-age',
      '0',
      '--json',
    ]);
    assert.equal(otherCn.code, 1);
    assert.equal((JSON.parse(otherCn.stdout) as CheckReport).failure?.reason, 'signer_constraint');
  });

  it('age: the real list is too old at the default 30 days (exit 1, list_too_old) with the signature still VALID', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const r = runCli(['check', real.list, '--signer', real.signer]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /^signature: VALID /m);
    assert.match(r.stdout, /^age: \d+ days: TOO OLD \(--max-list-age 30\)/m);
    assert.match(r.stdout, /^UNUSABLE: list_too_old — generated 2025-02-28T15:42:07Z/m);
    // Accepted into a state directory, that very list is usable.
    const stateDir = mkdtempSync(join(tmpdir(), 'state-'));
    const accepted = runCli(['check', real.list, '--signer', real.signer, '--state-dir', stateDir, '--accept']);
    assert.equal(accepted.code, 0, accepted.stdout);
    assert.match(accepted.stdout, /TOO OLD/);
    assert.match(accepted.stdout, /USABLE\n$/);
  });

  it('an untrusted signer: its KeyInfo fingerprint is printed and --save-signer writes it for out-of-band comparison', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const dir = mkdtempSync(join(tmpdir(), 'save-signer-'));
    const saved = join(dir, 'candidate.pem');
    const r = runCli(['check', real.list, '--signer', DEMO_SIGNER, '--max-list-age', '0', '--save-signer', saved]);
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^KeyInfo signer SHA-256: A0:DE:16:CA:A6:49:6A:1A:35:C5:A1:3D:6B:AF:82:65:62:30:2A:FE:E1:9B:9D:38:A6:9D:D7:AA:4D:A8:D6:97 /m,
    );
    assert.match(r.stdout, /UNUSABLE: signer_untrusted/);
    assert.equal(
      new X509Certificate(readFileSync(saved)).fingerprint256,
      new X509Certificate(readFileSync(real.signer)).fingerprint256,
    );
    // Pinned after the comparison, the list verifies.
    const pinned = runCli(['check', real.list, '--signer', saved, '--max-list-age', '0']);
    assert.equal(pinned.code, 0);
    assert.match(pinned.stdout, /^signer matched: pinned signer .*candidate\.pem$/m);
  });

  it("reads --max-list-entries and --max-shrink through serve's table: a bad value is refused with serve's error", () => {
    for (const [flag, value] of [
      ['--max-list-entries', 'abc'],
      ['--max-shrink', 'abc'],
      ['--max-shrink', '101'],
      ['--max-list-entries', '0'],
    ] as const) {
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
    assert.equal((JSON.parse(json.stdout) as CheckReport).guard?.verdict, 'refuse');
    const accepted = runCli(['check', older, '--allow-unsigned', '--state-dir', stateDir, '--accept']);
    assert.equal(accepted.code, 0, accepted.stdout);
    // The same list against no stored list: nothing to refuse (its age is judged apart, so not here).
    assert.equal(runCli(['check', older, '--allow-unsigned', '--max-list-age', '0']).code, 0);
  });

  it('takes state-dir and limits from --config, as serve would', () => {
    const stateDir = stateWith(DEMO_WHITELIST);
    const older = olderSmallList();
    const config = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'config.json');
    writeFileSync(
      config,
      JSON.stringify({
        whitelist: 'https://example.test/l.xml',
        'allow-unsigned': true,
        'state-dir': stateDir,
        'policy-listen': '127.0.0.1:10040',
      }),
    );
    const r = runCli(['check', older, '--config', config, '--json']);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match((JSON.parse(r.stdout) as CheckReport).guard?.against ?? '', new RegExp(stateDir));
    writeFileSync(config, JSON.stringify({ 'allow-unsigned': true, 'max-list-entries': 'abc' }));
    const bad = runCli(['check', older, '--config', config]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^check: max-list-entries \(config file\): expected a whole number/);
  });

  it('compares only with a stored list the daemon would keep: one another signer signed is set aside, as at start-up', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    // Stored: the demo list (demo signer). Checked: the real list (ANS signer), older than it. A daemon
    // trusting the ANS signer refuses that stored copy at start-up (state_unverified), so no rollback.
    const stateDir = stateWith(DEMO_WHITELIST);
    const r = runCli(['check', real.list, '--signer', real.signer, '--max-list-age', '0', '--state-dir', stateDir, '--json']);
    const report = JSON.parse(r.stdout) as CheckReport;
    assert.equal(report.usable, true);
    assert.match(
      report.guard?.against ?? '',
      /stored list refused, the daemon sets it aside at start-up as state_unverified: stored list: signer_untrusted: .* is not a pinned --signer\)$/,
    );
    assert.equal(report.guard?.verdict, 'accept');
    assert.equal(r.code, 0);
    // Trusting the demo signer, the same stored copy verifies and is compared with.
    const demo = checkDemo(stateDir, '--json');
    assert.equal((JSON.parse(demo.stdout) as CheckReport).guard?.against, `${stateDir} (generated 2026-11-22T21:54:56Z)`);
  });

  it('a list planted in the state dir (unsigned, dated in the future) does not make check refuse the genuine list', () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'state-'));
    writeFileSync(
      join(stateDir, STATE_LIST_FILE),
      buildListXml([{ nom: 'victime.mssante.test', dn: 'CN=attaquant.test,O=X,C=FR' }], '2030-01-01T00:00:00Z'),
    );
    const r = checkDemo(stateDir, '--json');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout) as CheckReport;
    assert.equal(report.guard?.verdict, 'accept');
    assert.match(report.guard?.against ?? '', /stored list refused, .*state_unverified/);
  });

  it('the accept command it prints for a too-old list works as printed: with --config, and with trust flags and a quoted path', (t) => {
    if (toolOrSkip(t, 'xmlsec1') === null) return;
    const signer = createListSigner();
    t.after(() => signer.cleanup());
    const work = mkdtempSync(join(tmpdir(), 'check-accept-'));
    const old = join(work, 'old.xml');
    writeFileSync(old, signer.sign(BASE_ENTRIES, isoDays(-45)));
    const printed = (stdout: string): string => {
      const m = /unless accepted: (mssante-policyd check .*)$/m.exec(stdout);
      assert.ok(m, stdout);
      return m[1]!;
    };

    // The packaged way: every trust setting and the state dir in the config file.
    const stateDir = join(work, 'state');
    const config = join(work, 'config.json');
    const [, ca, , cn] = signer.trustArgs;
    writeFileSync(config, JSON.stringify({ 'signer-ca': ca, 'signer-cn': cn, 'state-dir': stateDir }));
    const refused = runCli(['check', old, '--config', config]);
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    const command = printed(refused.stdout);
    assert.match(command, / --config \S*config\.json /);
    const accepted = runPrintedCommand(command);
    assert.equal(accepted.code, 0, `${command}\n${accepted.stdout}${accepted.stderr}`);
    assert.match(accepted.stdout, /^accepted: /m);
    assert.equal(runCli(['check', old, '--config', config]).code, 0, 'the accepted list is usable for that state dir');

    // Flags only, a state dir whose name needs quoting: the command carries the flags, quoted.
    const odd = join(work, "state dir o'clock");
    mkdirSync(odd);
    const r = runCli(['check', old, ...signer.trustArgs, '--state-dir', odd]);
    assert.equal(r.code, 1);
    const flagsCommand = printed(r.stdout);
    assert.match(flagsCommand, / --signer-ca \S+ --signer-cn liste\.test /);
    const ok = runPrintedCommand(flagsCommand);
    assert.equal(ok.code, 0, `${flagsCommand}\n${ok.stdout}${ok.stderr}`);
    const report = JSON.parse(runCli(['check', old, ...signer.trustArgs, '--json', '--max-list-age', '0']).stdout) as CheckReport;
    assert.ok(readFileSync(join(odd, ACCEPT_FILE), 'utf8').includes(report.sha256), 'recorded in the quoted state dir');
  });
});
