/**
 * Issue 21, point 4: a token in the list URL (userinfo, query string, fragment) leaked through the
 * unauthenticated `GET /v1/whitelist` (`source`), the logs and the state dir. The daemon is run
 * against a local HTTPS list server with all three carrying a secret; then every output is grepped:
 * each HTTP route, /metrics (labels included), every log line (a load, a failed load after SIGHUP),
 * every file of the state dir, `serve --print-config`, a start-up error, and `check` of the stored copy.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runCli } from '../../support/cli.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { BASE_ENTRIES, httpGet, isoDays, listInForce, reloadAndWait } from '../../support/faults.js';
import { startHttpsListServer, type HttpsListServer } from '../../support/https-server.js';
import { buildListXml } from '../../support/xmlsec.js';

const SECRETS = ['PASSWORD-S3CRET', 'QUERY-S3CRET', 'FRAGMENT-S3CRET', 'USER-S3CRET'] as const;

function assertNoSecret(where: string, text: string): void {
  for (const secret of SECRETS) assert.ok(!text.includes(secret), `${where} shows ${secret}:\n${text.slice(0, 2000)}`);
}

describe('no secret of the list URL in any output (issue 21)', { timeout: 900_000 }, () => {
  let server: HttpsListServer | null = null;
  let daemon: DaemonHandle | null = null;
  after(async () => {
    await daemon?.stop('SIGKILL');
    await server?.close();
  });

  it('HTTP, metrics, logs, state dir, --print-config, a start-up error and check show the URL redacted', async () => {
    server = await startHttpsListServer();
    server.setBehaviour({ kind: 'serve', body: buildListXml(BASE_ENTRIES, isoDays(-1)), etag: '"v1"' });
    const base = new URL(server.url);
    const url = `https://USER-S3CRET:PASSWORD-S3CRET@${base.host}${base.pathname}?token=QUERY-S3CRET#FRAGMENT-S3CRET`;
    const shown = `https://***@${base.host}${base.pathname}?***#***`;
    daemon = await startDaemon({
      whitelist: url,
      extraArgs: ['--ca-file', server.caFile, '--allow-unsigned'],
      readyTimeoutMs: 180_000,
    });
    assert.ok(
      server.requests.some((r) => r.path.includes('token=QUERY-S3CRET')),
      'the secret is still sent to the server (only what is shown is redacted)',
    );

    const status = await listInForce(daemon);
    assert.equal(status.source, shown);
    for (const route of ['/v1/whitelist', '/metrics', '/healthz', '/readyz', '/v1/operators']) {
      const res = await httpGet(daemon, route);
      assertNoSecret(`GET ${route}`, res.text);
    }

    // A failed load logs its detail too.
    server.setBehaviour({ kind: 'status', status: 404 });
    const failed = await reloadAndWait(daemon);
    assert.equal(failed.lastFailureReason, 'source_http_status');
    assertNoSecret('GET /v1/whitelist after a failure', (await httpGet(daemon, '/v1/whitelist')).text);

    for (const name of readdirSync(daemon.stateDir)) {
      assertNoSecret(`state file ${name}`, readFileSync(join(daemon.stateDir, name), 'utf8'));
    }
    const meta = JSON.parse(readFileSync(join(daemon.stateDir, 'whitelist.json'), 'utf8')) as { source: string };
    assert.equal(meta.source, shown);

    // A restart from the state dir shows the stored source, still redacted.
    const stateDir = daemon.stateDir;
    assert.equal(await daemon.stop(), 0);
    const firstLogs = daemon.logs.join('\n');
    assert.match(firstLogs, /"event":"list_load_failed"/);
    assertNoSecret('the logs (load, failed load, stop)', firstLogs);
    daemon = await startDaemon({
      whitelist: url,
      stateDir,
      extraArgs: ['--ca-file', server.caFile, '--allow-unsigned'],
      readyTimeoutMs: 180_000,
    });
    assert.equal((await listInForce(daemon)).source, shown);
    assert.equal(await daemon.stop(), 0);
    const logs = daemon.logs.join('\n');
    assert.match(logs, /"event":"list_loaded"/);
    assertNoSecret('the logs of a start from the state dir', logs);
    daemon = null;

    const printed = runCli(['serve', '--whitelist', url, '--state-dir', stateDir, '--allow-unsigned', '--print-config']);
    assert.equal(printed.code, 0, printed.stderr);
    assert.equal((JSON.parse(printed.stdout) as { whitelist: string }).whitelist, shown);
    const refused = runCli([
      'serve',
      '--whitelist',
      url.replace('https://', 'http://'),
      '--state-dir',
      stateDir,
      '--allow-unsigned',
    ]);
    assert.notEqual(refused.code, 0);
    const badScheme = runCli([
      'serve',
      '--whitelist',
      url.replace('https://', 'ftps://'),
      '--state-dir',
      stateDir,
      '--allow-unsigned',
    ]);
    assert.notEqual(badScheme.code, 0);
    assert.match(badScheme.stdout + badScheme.stderr, /ftps:\/\/\*\*\*@/);
    const checked = runCli(['check', join(stateDir, 'whitelist.xml'), '--allow-unsigned', '--state-dir', stateDir]);
    assert.equal(checked.code, 0, checked.stdout + checked.stderr);
    for (const [where, text] of [
      ['--print-config', printed.stdout + printed.stderr],
      ['a refused http:// source', refused.stdout + refused.stderr],
      ['a refused ftps:// source', badScheme.stdout + badScheme.stderr],
      ['check', checked.stdout + checked.stderr],
    ] as const)
      assertNoSecret(where, text);
  });
});
