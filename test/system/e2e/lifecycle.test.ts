/**
 * The list life cycle against the running daemon, from a local HTTPS source serving lists signed by
 * xmlsec1: every bad list is ignored and the last good one stays in force; a valid mail is never
 * answered 5xx, and requests are answered during every reload (issue 3's acceptance sequence).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { startDaemonUnready, waitFor } from '../../support/faults.js';
import { runCli } from '../../support/cli.js';
import { startHttpsListServer, type HttpsListServer } from '../../support/https-server.js';
import { PolicyClient, postfixRequest } from '../../support/policy-client.js';
import { TestPki, operatorSubject, type Issued } from '../../support/pki.js';
import { toolOrSkip } from '../../support/tools.js';
import { buildListXml, signList } from '../../support/xmlsec.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OP1 = operatorSubject('mx.op1.test', 'GIP OP1');
const OP2 = operatorSubject('smtp.op2.test', 'GIP OP2', '1750048886');
const dn = (s: typeof OP1): string =>
  [...s]
    .reverse()
    .map(([t, v]) => `${t}=${v}`)
    .join(',');
const FILLER = Array.from({ length: 20 }, (_, i) => ({ nom: `filler${i}.mssante.test`, dn: dn(OP2) }));
const BASE = [{ nom: 'op1.mssante.test', dn: dn(OP1) }, { nom: 'op2.mssante.test', dn: dn(OP2) }, ...FILLER];

interface Status {
  usable: boolean;
  generatedAt: string | null;
  sha256: string | null;
  domains: number;
  skipped: Array<{ reason: string }>;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  lastFailureReason: string | null;
}

describe('list life cycle (running daemon, HTTPS source, xmlsec1-signed lists)', { timeout: 900_000 }, () => {
  let pki: TestPki;
  let signer: Issued;
  let server: HttpsListServer;
  let daemon: DaemonHandle | null = null;
  let skipped = false;

  after(async () => {
    await daemon?.stop();
    await server?.close();
  });

  const sign = (entries: Array<{ nom: string; dn: string }>, generatedAt: string): string =>
    signList(buildListXml(entries, generatedAt), { keyPath: signer.keyPath, certPath: signer.certPath });

  async function status(): Promise<Status> {
    const res = await fetch(`http://${daemon!.httpAddress}/v1/whitelist`);
    return (await res.json()) as Status;
  }

  /** SIGHUP, then wait for the load to end (a new success or failure time). */
  async function reloadAndWait(): Promise<Status> {
    const before = await status();
    daemon!.signal('SIGHUP');
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      await sleep(100);
      const now = await status();
      if (now.lastSuccessAt !== before.lastSuccessAt || now.lastFailureAt !== before.lastFailureAt) return now;
    }
    throw new Error(`reload did not finish; logs:\n${daemon!.logs.slice(-20).join('\n')}`);
  }

  /** Answers a valid mail on a persistent connection all along, counting what is not DUNNO. */
  function steadyTraffic(client: PolicyClient): { stop: () => Promise<{ answered: number; bad: string[] }> } {
    let running = true;
    let answered = 0;
    const bad: string[] = [];
    const loop = (async () => {
      while (running) {
        const action = await client
          .ask(postfixRequest('mx.op1.test', 'dr.x@op1.mssante.test'))
          .catch((e: Error) => `error: ${e.message}`);
        answered++;
        if (action !== 'DUNNO') bad.push(action);
        await sleep(5);
      }
    })();
    return {
      stop: async () => {
        running = false;
        await loop;
        client.close();
        return { answered, bad };
      },
    };
  }

  it('keeps the last good list through every failure, and takes every good one', async (t) => {
    if (toolOrSkip(t, 'xmlsec1') === null || toolOrSkip(t, 'openssl') === null) {
      skipped = true;
      return;
    }
    pki = new TestPki();
    const ca = pki.createCa('ca', [
      ['C', 'FR'],
      ['O', 'TEST-SANTE'],
      ['CN', 'AC TEST ELEMENTAIRE ORGANISATIONS'],
    ]);
    signer = pki.issue(
      'signer',
      [
        ['C', 'FR'],
        ['O', 'TEST ANS'],
        ['CN', 'liste.test'],
      ],
      ca,
      { usage: 'signing', notBefore: '20250101000000Z' },
    );
    server = await startHttpsListServer(pki);

    // Fixed 2026-01 dates, older than --max-list-age's default: the daemons here run with 0 (age is
    // tested in test/system/e2e/signer-trust.test.ts).
    const good1 = sign(BASE, '2026-01-01T00:00:00Z');
    server.setBehaviour({ kind: 'serve', body: good1, etag: '"v1"' });
    daemon = await startDaemon({
      whitelist: server.url,
      extraArgs: [
        '--signer',
        signer.certPath,
        '--max-list-age',
        '0',
        '--ca-file',
        server.caFile,
        '--fetch-timeout',
        '4',
        '--max-list-bytes',
        '1048576',
      ],
    });
    const client = await PolicyClient.connect(daemon.policyAddress);
    const ask = (cn: string, sender: string): Promise<string> => client.ask(postfixRequest(cn, sender));
    assert.equal(await ask('mx.op1.test', 'a@op1.mssante.test'), 'DUNNO');
    assert.equal((await status()).generatedAt, '2026-01-01T00:00:00Z');

    const traffic = steadyTraffic(await PolicyClient.connect(daemon.policyAddress));
    const step = async (
      name: string,
      body: Parameters<HttpsListServer['setBehaviour']>[0],
      expected: { reason?: string; generatedAt: string },
    ): Promise<Status> => {
      server.setBehaviour(body);
      const s = await reloadAndWait();
      assert.equal(s.usable, true, name);
      assert.equal(s.generatedAt, expected.generatedAt, `${name}: list in force`);
      if (expected.reason !== undefined) assert.equal(s.lastFailureReason, expected.reason, `${name}: failure reason`);
      assert.equal(await ask('mx.op1.test', 'a@op1.mssante.test'), 'DUNNO', `${name}: valid mail still passes`);
      return s;
    };

    // A good list signed, then altered: the digest no longer matches.
    const tampered = sign([...BASE, { nom: 'evil.mssante.test', dn: dn(OP1) }], '2026-01-02T00:00:00Z').replace(
      'evil.mssante.test',
      'evil.mssante.tesu',
    );
    await step(
      'bad signature',
      { kind: 'serve', body: tampered, etag: '"v2"' },
      { reason: 'signature_digest_mismatch', generatedAt: '2026-01-01T00:00:00Z' },
    );
    assert.match(await ask('mx.op1.test', 'a@evil.mssante.tesu'), /^550 5\.7\.1 /);

    // A good list with a new domain: used at once.
    const good2 = sign([...BASE, { nom: 'new.mssante.test', dn: dn(OP1) }], '2026-01-03T00:00:00Z');
    assert.match(await ask('mx.op1.test', 'a@new.mssante.test'), /^550 5\.7\.1 /);
    await step(
      'good list with a new domain',
      { kind: 'serve', body: good2, etag: '"v3"' },
      { generatedAt: '2026-01-03T00:00:00Z' },
    );
    assert.equal(await ask('mx.op1.test', 'a@new.mssante.test'), 'DUNNO');

    // The 2020-10-07 incident: junk entries are skipped, the rest applies.
    const junk = sign(
      [
        ...BASE,
        { nom: 'new.mssante.test', dn: dn(OP1) },
        { nom: '_', dn: '_' },
        { nom: '_', dn: '_' },
        { nom: '_', dn: '_' },
        { nom: 'junkday.mssante.test', dn: dn(OP2) },
      ],
      '2026-01-04T00:00:00Z',
    );
    const s4 = await step(
      'list with junk entries',
      { kind: 'serve', body: junk, etag: '"v4"' },
      { generatedAt: '2026-01-04T00:00:00Z' },
    );
    assert.equal(s4.skipped.length, 3);
    assert.ok(s4.skipped.every((r) => r.reason === 'field_placeholder'));
    assert.equal(await ask('smtp.op2.test', 'a@junkday.mssante.test'), 'DUNNO');

    // Broken downloads and sources: all ignored.
    const truncated = junk.slice(0, Math.floor(junk.length / 2));
    await step(
      'truncated file',
      { kind: 'serve', body: truncated, etag: '"v5"' },
      { reason: 'xml_malformed', generatedAt: '2026-01-04T00:00:00Z' },
    );
    await step('404', { kind: 'status', status: 404 }, { reason: 'source_http_status', generatedAt: '2026-01-04T00:00:00Z' });
    await step(
      '500 every time',
      { kind: 'status', status: 500 },
      { reason: 'source_http_status', generatedAt: '2026-01-04T00:00:00Z' },
    );
    await step('server that never answers', { kind: 'hang' }, { reason: 'source_timeout', generatedAt: '2026-01-04T00:00:00Z' });
    await step(
      'oversize body',
      { kind: 'oversize', bytes: 2 * 1048576, declareLength: false },
      { reason: 'source_too_large', generatedAt: '2026-01-04T00:00:00Z' },
    );

    // Rollback: an older (validly signed) list is refused.
    await step(
      'older list',
      { kind: 'serve', body: good2, etag: '"v3b"' },
      { reason: 'list_older', generatedAt: '2026-01-04T00:00:00Z' },
    );

    // A list that drops half the domains: refused by the guard...
    const half = sign([BASE[0]!, BASE[1]!, ...FILLER.slice(0, 9)], '2026-01-05T00:00:00Z');
    const s5 = await step(
      'list dropping 50 % of the domains',
      { kind: 'serve', body: half, etag: '"v6"' },
      { reason: 'list_shrink', generatedAt: '2026-01-04T00:00:00Z' },
    );
    assert.equal(s5.domains, 24);
    assert.equal(await ask('smtp.op2.test', 'a@filler15.mssante.test'), 'DUNNO');

    const { answered, bad } = await traffic.stop();
    assert.deepEqual(bad, [], 'a valid mail was never refused nor deferred during the reloads');
    assert.ok(answered > 20, `requests were answered throughout the reloads (${answered})`);

    // ...until the operator accepts that very list.
    const file = join(mkdtempSync(join(tmpdir(), 'accept-')), 'half.xml');
    writeFileSync(file, half);
    const accepted = runCli(['check', file, '--signer', signer.certPath, '--state-dir', daemon.stateDir, '--accept']);
    assert.equal(accepted.code, 0, accepted.stdout + accepted.stderr);
    assert.match(accepted.stdout, /guard against .*: refuse — list would drop 13 of 24 domains/);
    const s6 = await reloadAndWait();
    assert.equal(s6.generatedAt, '2026-01-05T00:00:00Z');
    assert.equal(s6.domains, 11);
    assert.match(await ask('smtp.op2.test', 'a@filler15.mssante.test'), /^550 5\.7\.1 /);

    // Restart with the source down: the state directory serves the last good list.
    client.close();
    const stateDir = daemon.stateDir;
    assert.equal(await daemon.stop(), 0, 'SIGTERM exits 0');
    server.setBehaviour({ kind: 'status', status: 503 });
    daemon = await startDaemon({
      whitelist: server.url,
      stateDir,
      extraArgs: ['--signer', signer.certPath, '--max-list-age', '0', '--ca-file', server.caFile, '--fetch-timeout', '2'],
    });
    const restarted = await status();
    assert.equal(restarted.usable, true);
    assert.equal(restarted.generatedAt, '2026-01-05T00:00:00Z');
    const c2 = await PolicyClient.connect(daemon.policyAddress);
    assert.equal(await c2.ask(postfixRequest('mx.op1.test', 'a@op1.mssante.test')), 'DUNNO');
    c2.close();
  });

  it('answers 451 (never 5xx) while no usable list was ever loaded, then serves once one arrives', async (t) => {
    if (skipped || toolOrSkip(t, 'xmlsec1') === null) return;
    await daemon?.stop();
    daemon = null;
    server.setBehaviour({ kind: 'status', status: 500 });
    const stateDir = mkdtempSync(join(tmpdir(), 'unready-'));
    const unready = await startDaemonUnready({
      whitelist: server.url,
      stateDir,
      extraArgs: ['--signer', signer.certPath, '--max-list-age', '0', '--ca-file', server.caFile, '--fetch-timeout', '2'],
    });
    const answer = await waitFor('a tempfail answer', async () => {
      try {
        const c = await PolicyClient.connect(unready.policyAddress);
        try {
          return await c.ask(postfixRequest('mx.op1.test', 'a@op1.mssante.test'));
        } finally {
          c.close();
        }
      } catch {
        return null;
      }
    });
    assert.match(answer, /^451 4\.3\.0 /, 'no list in force: deferred, never refused');
    server.setBehaviour({ kind: 'serve', body: sign(BASE, '2026-02-01T00:00:00Z'), etag: '"late"' });
    process.kill(await unready.pid(), 'SIGHUP');
    daemon = await unready.ready;
    const c = await PolicyClient.connect(daemon.policyAddress);
    assert.equal(await c.ask(postfixRequest('mx.op1.test', 'a@op1.mssante.test')), 'DUNNO');
    c.close();
  });
});
