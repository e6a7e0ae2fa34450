/**
 * What a newcomer sees: the daemon on the embedded demo list (signature verified with the demo
 * signer), asked with the `query` command exactly as the README shows.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../../src/config.js';
import { runCli } from '../../support/cli.js';
import { REPO_ROOT } from '../../support/fixtures.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';

describe('demo list and the query command (README examples)', () => {
  let daemon: DaemonHandle;
  before(async () => {
    daemon = await startDaemon({ whitelist: DEMO_WHITELIST, extraArgs: ['--signer', DEMO_SIGNER] });
  });
  after(async () => {
    await daemon?.stop();
  });

  const query = (...attrs: string[]): ReturnType<typeof runCli> =>
    runCli([
      'query',
      '--policy',
      daemon.policyAddress,
      'encryption_protocol=TLSv1.3',
      'ccert_subject=mx.demo-hopital.test',
      ...attrs,
    ]);

  it('passes a listed certificate with its own domain', () => {
    const r = query('sender=dr.martin@demo-hopital.mssante.fr');
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'action=DUNNO\n');
  });

  it('refuses a domain of another operator, and a sub-domain not listed', () => {
    assert.equal(
      query('sender=dr.martin@demo-clinique.mssante.fr').stdout,
      'action=550 5.7.1 Domaine expediteur non rattache au certificat presente / sender domain not bound to the presented certificate\n',
    );
    assert.equal(
      query('sender=x@autre.demo-hopital.mssante.fr').stdout,
      'action=550 5.7.1 Domaine expediteur absent de la liste blanche MSSante / sender domain not in the MSSante whitelist\n',
    );
  });

  it('reports the signed demo list and its skipped junk entry', async () => {
    const status = (await (await fetch(`http://${daemon.httpAddress}/v1/whitelist`)).json()) as {
      signer: { subject: string } | null;
      domains: number;
      skipped: Array<{ reason: string }>;
    };
    assert.match(status.signer?.subject ?? '', /demo-signer/);
    assert.equal(status.domains, 3);
    assert.deepEqual(
      status.skipped.map((s) => s.reason),
      ['field_placeholder'],
    );
  });

  it('query says clearly when nobody answers', () => {
    const r = runCli(['query', '--policy', '127.0.0.1:1', 'sender=a@b.fr']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ECONNREFUSED/);
  });

  it('serve --print-config shows the effective configuration and its origins', () => {
    const r = runCli(['serve', '--whitelist', 'demo', '--print-config', '--refresh', '600'], {
      env: { MSSANTE_POLICYD_MAX_SHRINK: '25' },
    });
    assert.equal(r.code, 0);
    const config = JSON.parse(r.stdout) as {
      refreshSeconds: number;
      maxShrinkPercent: number;
      whitelistIsDemo: boolean;
      origins: Record<string, string>;
    };
    assert.equal(config.refreshSeconds, 600);
    assert.equal(config.origins.refresh, 'flag');
    assert.equal(config.maxShrinkPercent, 25);
    assert.equal(config.origins['max-shrink'], 'env');
    assert.equal(config.whitelistIsDemo, true);
  });

  it('serve outside npm start refuses to run on the demo list unless told so', () => {
    const r = runCli(['serve', '--print-config']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^serve: no whitelist given .*"demo"/);
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    assert.match(pkg.scripts['start'] ?? '', / serve --whitelist demo\b/);
  });

  it('query takes the policy address from --config, as serve reads it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ whitelist: 'demo', 'policy-listen': daemon.policyAddress }));
    const r = runCli([
      'query',
      '--config',
      config,
      'encryption_protocol=TLSv1.3',
      'ccert_subject=mx.demo-hopital.test',
      'sender=dr.martin@demo-hopital.mssante.fr',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'action=DUNNO\n');
    // --policy still wins over the file.
    assert.equal(runCli(['query', '--config', config, '--policy', '127.0.0.1:1', 'sender=a@b.fr']).code, 1);
    writeFileSync(config, JSON.stringify({ 'policy-listen': 'nonsense' }));
    const bad = runCli(['query', '--config', config, 'sender=a@b.fr']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^query: invalid listen address/);
  });

  it('serve refuses a bad flag with a clear error and exit 2', () => {
    const r = runCli(['serve', '--refresh', 'soon']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--refresh.*whole number/);
  });
});
