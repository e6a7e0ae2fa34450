import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { CheckReport } from '../../src/cli.js';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../src/config.js';
import { ACCEPT_FILE } from '../../src/whitelist/state.js';
import { runCli } from '../support/cli.js';
import { realListOrSkip } from '../support/fixtures.js';

describe('mssante-policyd check', () => {
  it('loads the real signed list: 6 494 entries, signature valid at generation, DN variants reported', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const { code, stdout } = runCli(['check', real.list, '--signer', real.signer, '--json']);
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
    assert.equal((JSON.parse(r2.stdout) as CheckReport).failure?.reason, 'signer_untrusted');
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
    const report = JSON.parse(r.stdout) as CheckReport;
    assert.equal(report.accepted, true);
    assert.equal(readFileSync(join(stateDir, ACCEPT_FILE), 'utf8').trim(), report.sha256);
  });
});
