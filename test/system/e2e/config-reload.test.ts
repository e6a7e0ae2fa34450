/**
 * SIGHUP re-reads the config file: a live setting (here --trusted-issuer-cn) changes the next
 * decision; a setting that needs a restart (--refresh) is logged and keeps its running value; a
 * broken file is logged and counted and every running setting stays. Also what the running build
 * says of itself: build_info{version,node} and /healthz.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { httpGet, logRecords, metricNow, tempDir, unsignedListFile, VALID, waitFor } from '../../support/faults.js';
import { REPO_ROOT } from '../../support/fixtures.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';

const ISSUER = 'AC IGC-SANTE ELEMENTAIRE ORGANISATIONS';
const OTHER_ISSUER = 'Some Other CA';

describe('SIGHUP re-reads the config file', { timeout: 600_000 }, () => {
  let daemon: DaemonHandle | null = null;
  after(async () => {
    await daemon?.stop('SIGKILL');
  });

  it('a live setting changes the next decision; a restart-only one is logged and kept; a broken file changes nothing', async () => {
    const dir = tempDir('config-reload');
    const configFile = join(dir, 'config.json');
    const settings = { 'allow-unsigned': true, refresh: 3600 };
    writeFileSync(configFile, JSON.stringify(settings));
    daemon = await startDaemon({ whitelist: unsignedListFile(), extraArgs: ['--config', configFile] });
    const d = daemon;
    const ask = (): Promise<string> =>
      askOnce(d.policyAddress, { ...postfixRequest(VALID.cn, VALID.sender), ccert_issuer: OTHER_ISSUER });
    const loadedAt = await metricNow(d, 'mssante_policyd_config_last_reload_timestamp_seconds');
    assert.ok(loadedAt > 0, 'the start-up load is the first config load');
    assert.equal(await ask(), 'DUNNO', 'no issuer constraint yet');

    // Live: the issuer constraint, and a restart-only change in the same file.
    writeFileSync(configFile, JSON.stringify({ ...settings, refresh: 7200, 'trusted-issuer-cn': [ISSUER] }));
    d.signal('SIGHUP');
    await waitFor('config_reloaded', () => logRecords(d, 'config_reloaded').length === 1, 120_000);
    assert.deepEqual(logRecords(d, 'config_reloaded')[0]?.['changed'], ['trusted-issuer-cn']);
    assert.deepEqual(logRecords(d, 'config_needs_restart')[0]?.['settings'], ['refresh']);
    assert.match(await ask(), /^550 5\.7\.1 /, 'the next decision applies the new issuer constraint');
    assert.equal(await askOnce(d.policyAddress, { ...postfixRequest(VALID.cn, VALID.sender), ccert_issuer: ISSUER }), 'DUNNO');
    assert.ok((await metricNow(d, 'mssante_policyd_config_last_reload_timestamp_seconds')) >= loadedAt);

    // Broken: logged and counted, the running settings (the issuer constraint included) stay.
    writeFileSync(configFile, '{"trusted-issuer-cn": [');
    d.signal('SIGHUP');
    await waitFor('config_reload_failed', () => logRecords(d, 'config_reload_failed').length === 1, 120_000);
    assert.equal(await metricNow(d, 'mssante_policyd_config_reload_failures_total'), 1);
    assert.match(await ask(), /^550 5\.7\.1 /);
    // An invalid value is a failure too, not half a change.
    writeFileSync(configFile, JSON.stringify({ ...settings, 'trusted-issuer-cn': [], 'tls-profile': 'ref1-v9' }));
    d.signal('SIGHUP');
    await waitFor('second config_reload_failed', () => logRecords(d, 'config_reload_failed').length === 2, 120_000);
    assert.match(String(logRecords(d, 'config_reload_failed')[1]?.['err']), /tls-profile/);
    assert.match(await ask(), /^550 5\.7\.1 /);
    // Fixed again: applies.
    writeFileSync(configFile, JSON.stringify(settings));
    d.signal('SIGHUP');
    await waitFor('second config_reloaded', () => logRecords(d, 'config_reloaded').length === 2, 120_000);
    assert.equal(await ask(), 'DUNNO');
    assert.equal(d.logs.filter((l) => l.startsWith('stderr:')).length, 0, d.logs.join('\n'));
  });

  it('build_info{version,node} = 1 and /healthz name the running version and start time', async () => {
    const d = daemon!;
    const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    assert.equal(await metricNow(d, 'mssante_policyd_build_info', { version, node: process.versions.node }), 1);
    const res = await httpGet(d, '/healthz');
    assert.equal(res.status, 200);
    const body = JSON.parse(res.text) as { status: string; version: string; node: string; startedAt: string };
    assert.equal(body.status, 'alive');
    assert.equal(body.version, version);
    assert.equal(body.node, process.versions.node);
    const started = Date.parse(body.startedAt);
    assert.ok(Number.isFinite(started) && started <= Date.now(), body.startedAt);
  });
});
