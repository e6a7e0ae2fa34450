/**
 * Issue #11 end to end, with a running daemon and an HTTPS source: who may sign the list (the
 * attacker's TLS certificate from the signer's CA never does, whatever the mode), the signer's
 * rotation (a successor pinned beside the old one, or taken by CA + CN), a signer-plus-CA bundle
 * refused at start-up, and the freshness bound at a first start (list_too_old) and after it.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { X509Certificate } from 'node:crypto';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import {
  BASE_ENTRIES,
  createListSigner,
  httpGet,
  isoDays,
  listInForce,
  metricNow,
  OP1_DN,
  reloadAndWait,
  startDaemonUnready,
  tempDir,
  VALID,
  waitFor,
  type ListEntry,
  type ListSigner,
} from '../../support/faults.js';
import { runCli, runPrintedCommand } from '../../support/cli.js';
import { startHttpsListServer, type HttpsListServer } from '../../support/https-server.js';
import { operatorSubject, subjectRfc2253, type Issued } from '../../support/pki.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { toolOrSkip } from '../../support/tools.js';

const ATTACKER_CN = 'mx.attacker.test';
/** The machine may be loaded: readiness is waited for generously (each wait ends as soon as it is met). */
const READY_MS = 120_000;
const VICTIM = { nom: 'victim.mssante.test', dn: OP1_DN };
const GOOD: readonly ListEntry[] = [...BASE_ENTRIES, VICTIM];
/** What the attacker wants: the victim's domain bound to the attacker's certificate. */
const attackerMail = (): Record<string, string> => postfixRequest(ATTACKER_CN, 'ceo@victim.mssante.test');

describe('who may sign the list (running daemon)', () => {
  let lists: ListSigner | null = null;
  let server: HttpsListServer | null = null;
  const daemons: DaemonHandle[] = [];
  let attacker: Issued;
  let forged: string;

  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await server?.close();
    lists?.cleanup();
  });

  function setup(t: TestContext): ListSigner | null {
    if (toolOrSkip(t, 'xmlsec1') === null || toolOrSkip(t, 'openssl') === null) return null;
    if (lists !== null) return lists;
    lists = createListSigner();
    // An operator's TLS server certificate from the signer's own CA: what every MSSante operator holds.
    attacker = lists.pki.issue('attacker', operatorSubject(ATTACKER_CN, 'ATTACKER'), lists.ca, { usage: 'tls' });
    const attackerDn = subjectRfc2253(operatorSubject(ATTACKER_CN, 'ATTACKER'));
    forged = lists.sign([...BASE_ENTRIES, { nom: 'victim.mssante.test', dn: attackerDn }], isoDays(0), attacker);
    return lists;
  }

  async function start(args: string[], generatedAt = isoDays(-1)): Promise<DaemonHandle> {
    const l = lists as ListSigner;
    server ??= await startHttpsListServer(l.pki);
    server.setBehaviour({ kind: 'serve', body: l.sign(GOOD, generatedAt), etag: null });
    const d = await startDaemon({
      whitelist: server.url,
      readyTimeoutMs: READY_MS,
      extraArgs: [...args, '--ca-file', server.caFile],
    });
    daemons.push(d);
    await waitFor('the first list in force', async () => (await listInForce(d)).generatedAt === generatedAt);
    return d;
  }

  it("CA + CN: a list re-signed by the attacker's TLS certificate of the signer's CA is refused; the previous list stays; the attacker still gets 550", async (t) => {
    const l = setup(t);
    if (l === null) return;
    const goodAt = isoDays(-1);
    const d = await start([...l.trustArgs], goodAt);
    assert.match(await askOnce(d.policyAddress, attackerMail()), /^550 5\.7\.1 /);
    assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, 'a@victim.mssante.test')), 'DUNNO');

    server!.setBehaviour({ kind: 'serve', body: forged, etag: null });
    const s = await reloadAndWait(d);
    assert.equal(s.lastFailureReason, 'signer_constraint', s.lastFailureDetail ?? '');
    assert.match(s.lastFailureDetail ?? '', /O=ATTACKER/);
    assert.equal(s.generatedAt, goodAt, 'the previous list stays in force');
    assert.match(String((s.signer as { subject?: string } | null)?.subject), /CN=liste\.test/);
    assert.equal(
      s.signer?.fingerprint256,
      new X509Certificate(l.signer.certPem).fingerprint256,
      '/v1/whitelist names the signer in force',
    );
    assert.match(s.signer?.matched ?? '', /\+ --signer-cn liste\.test$/);
    assert.match(await askOnce(d.policyAddress, attackerMail()), /^550 5\.7\.1 /);
    assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, 'a@victim.mssante.test')), 'DUNNO');
    assert.equal(await metricNow(d, 'whitelist_load_failures_total', { reason: 'signer_constraint' }), 1);

    // A TLS certificate of the same CA carrying the signer's CN (a CA mistake): the key usage rule.
    const sameCn = l.pki.issue(
      'tls-with-signer-cn',
      [
        ['C', 'FR'],
        ['O', 'TEST ANS'],
        ['CN', 'liste.test'],
      ],
      l.ca,
      { usage: 'tls' },
    );
    server!.setBehaviour({
      kind: 'serve',
      body: l.sign([...BASE_ENTRIES, VICTIM, { nom: 'x.mssante.test', dn: OP1_DN }], isoDays(0), sameCn),
      etag: null,
    });
    const s2 = await reloadAndWait(d);
    assert.equal(s2.lastFailureReason, 'signer_key_usage', s2.lastFailureDetail ?? '');
    assert.equal(s2.generatedAt, goodAt);
    assert.equal(await metricNow(d, 'whitelist_load_failures_total', { reason: 'signer_key_usage' }), 1);

    // Rotation under CA + CN: the ANS's successor (same CA, same CN) is taken without a change here.
    const successor = l.issueSigner('successor', { notBefore: '20250101000000Z', notAfter: '20300101000000Z' });
    const rotatedAt = isoDays(0);
    server!.setBehaviour({ kind: 'serve', body: l.sign(GOOD, rotatedAt, successor), etag: null });
    const s3 = await reloadAndWait(d);
    assert.equal(s3.generatedAt, rotatedAt, s3.lastFailureDetail ?? '');
    assert.equal(
      await metricNow(d, 'whitelist_signer_not_after_timestamp_seconds'),
      Date.parse(new X509Certificate(successor.certPem).validTo) / 1000,
      'the metric follows the signer in use',
    );
    assert.equal(await d.stop(), 0);
  });

  it('pinned: the attacker and an unpinned successor are signer_untrusted; pinning the successor beside the old signer rotates without an outage', async (t) => {
    const l = setup(t);
    if (l === null) return;
    const goodAt = isoDays(-2);
    const d = await start(['--signer', l.signer.certPath], goodAt);
    assert.equal(
      await metricNow(d, 'whitelist_signer_not_after_timestamp_seconds'),
      Date.parse(new X509Certificate(l.signer.certPem).validTo) / 1000,
    );
    server!.setBehaviour({ kind: 'serve', body: forged, etag: null });
    const s = await reloadAndWait(d);
    assert.equal(s.lastFailureReason, 'signer_untrusted');
    assert.equal(s.generatedAt, goodAt);
    assert.match(await askOnce(d.policyAddress, attackerMail()), /^550 5\.7\.1 /);

    const successor = l.issueSigner('next-signer', { notBefore: '20250101000000Z', notAfter: '20300101000000Z' });
    const rotatedAt = isoDays(-1);
    const rotated = l.sign(GOOD, rotatedAt, successor);
    server!.setBehaviour({ kind: 'serve', body: rotated, etag: null });
    const s2 = await reloadAndWait(d);
    assert.equal(s2.lastFailureReason, 'signer_untrusted');
    assert.equal(s2.generatedAt, goodAt, 'the old list stays in force meanwhile');

    // The operator's procedure: save the KeyInfo certificate, compare its fingerprint out of band, pin it too.
    const dir = tempDir('rotation');
    const file = join(dir, 'new.xml');
    writeFileSync(file, rotated);
    const candidate = join(dir, 'candidate.pem');
    const checked = runCli(['check', file, '--signer', l.signer.certPath, '--save-signer', candidate]);
    assert.equal(checked.code, 1);
    const fingerprint = new X509Certificate(successor.certPem).fingerprint256;
    assert.ok(checked.stdout.includes(`KeyInfo signer SHA-256: ${fingerprint}`), checked.stdout);
    const both = runCli(['check', file, '--signer', l.signer.certPath, '--signer', candidate]);
    assert.equal(both.code, 0, both.stdout + both.stderr);
    assert.match(both.stdout, /^signer matched: pinned signer .*candidate\.pem$/m);

    const stateDir = d.stateDir;
    assert.equal(await d.stop(), 0);
    const d2 = await startDaemon({
      whitelist: server!.url,
      stateDir,
      readyTimeoutMs: READY_MS,
      extraArgs: ['--signer', l.signer.certPath, '--signer', candidate, '--ca-file', server!.caFile],
    });
    daemons.push(d2);
    const s3 = await waitFor('the successor-signed list in force', async () => {
      const now = await listInForce(d2);
      return now.generatedAt === rotatedAt ? now : null;
    });
    assert.equal(s3.usable, true);
    assert.equal(await askOnce(d2.policyAddress, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');
    assert.equal(await d2.stop(), 0);
  });

  it('start-up is refused when --signer holds a CA (a signer-plus-CA bundle), or --signer-ca comes without --signer-cn', async (t) => {
    const l = setup(t);
    if (l === null) return;
    const bundle = join(tempDir('bundle'), 'signer-and-ca.pem');
    writeFileSync(bundle, `${l.signer.certPem}${l.ca.certPem}`);
    server ??= await startHttpsListServer(l.pki);
    await assert.rejects(
      startDaemon({ whitelist: server.url, extraArgs: ['--signer', bundle, '--ca-file', server.caFile] }),
      /daemon exited with code 1[\s\S]*certificate #2 .*is a CA certificate \(basicConstraints CA:TRUE\)/,
    );
    await assert.rejects(
      startDaemon({ whitelist: server.url, extraArgs: ['--signer-ca', l.ca.certPath, '--ca-file', server.caFile] }),
      /daemon exited with code 2[\s\S]*--signer-ca needs an identity constraint: add --signer-cn NAME/,
    );
  });
});

describe('freshness: --max-list-age (running daemon)', () => {
  let lists: ListSigner | null = null;
  let server: HttpsListServer | null = null;
  const daemons: DaemonHandle[] = [];
  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await server?.close();
    lists?.cleanup();
  });

  it('first start with nothing stored: a 40-day-old list is refused (451, /readyz 503) until a fresh list comes', async (t) => {
    if (toolOrSkip(t, 'xmlsec1') === null || toolOrSkip(t, 'openssl') === null) return;
    lists = createListSigner();
    server = await startHttpsListServer(lists.pki);
    const oldAt = isoDays(-40);
    server.setBehaviour({ kind: 'serve', body: lists.sign(GOOD, oldAt), etag: null });
    const stateDir = tempDir('fresh');
    const u = await startDaemonUnready({
      whitelist: server.url,
      stateDir,
      readyTimeoutMs: READY_MS,
      extraArgs: [...lists.trustArgs, '--ca-file', server.caFile],
    });
    const failed = await waitFor(
      'the refusal',
      async () => {
        try {
          const s = await listInForce({ httpAddress: u.httpAddress });
          return s.lastFailureReason !== null ? s : null;
        } catch {
          return null; // not listening yet
        }
      },
      60_000,
      200,
    );
    assert.equal(failed.lastFailureReason, 'list_too_old', failed.lastFailureDetail ?? '');
    assert.match(failed.lastFailureDetail ?? '', /40 days old \(--max-list-age 30\)/);
    assert.equal(failed.usable, false);
    assert.equal((await httpGet({ httpAddress: u.httpAddress }, '/readyz')).status, 503);
    assert.match(await askOnce(u.policyAddress, postfixRequest(VALID.cn, VALID.sender)), /^451 4\.3\.0 /);

    const freshAt = isoDays(-1);
    server.setBehaviour({ kind: 'serve', body: lists.sign(GOOD, freshAt), etag: null });
    process.kill(await u.pid(), 'SIGHUP');
    const d = await u.ready;
    daemons.push(d);
    assert.equal((await listInForce(d)).generatedAt, freshAt);
    assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');
    assert.equal((await metricNow(d, 'whitelist_load_failures_total', { reason: 'list_too_old' })) >= 1, true);
    assert.equal(await d.stop(), 0);
  });

  it('check --accept of that very old list lets it in; once stored, a restart serves it whatever its age', async (t) => {
    if (lists === null || server === null || toolOrSkip(t, 'xmlsec1') === null) return;
    const oldAt = isoDays(-45);
    const old = lists.sign(GOOD, oldAt);
    server.setBehaviour({ kind: 'serve', body: old, etag: null });
    const stateDir = tempDir('accept-old');
    const u = await startDaemonUnready({
      whitelist: server.url,
      stateDir,
      readyTimeoutMs: READY_MS,
      extraArgs: [...lists.trustArgs, '--ca-file', server.caFile],
    });
    await waitFor(
      'the refusal',
      async () => {
        try {
          return (await listInForce({ httpAddress: u.httpAddress })).lastFailureReason === 'list_too_old';
        } catch {
          return false;
        }
      },
      60_000,
      200,
    );

    const file = join(tempDir('old'), 'old.xml');
    writeFileSync(file, old);
    const r = runCli(['check', file, ...lists.trustArgs, '--state-dir', stateDir, '--accept']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^age: 45 days: TOO OLD \(--max-list-age 30\)/m);
    assert.match(r.stdout, /^signature: VALID /m);
    process.kill(await u.pid(), 'SIGHUP');
    const d = await u.ready;
    daemons.push(d);
    assert.equal((await listInForce(d)).generatedAt, oldAt);

    // The list in force ages: a restart (stored copy) keeps serving it, even with a tighter limit.
    assert.equal(await d.stop(), 0);
    server.setBehaviour({ kind: 'status', status: 503 });
    const d2 = await startDaemon({
      whitelist: server.url,
      stateDir,
      readyTimeoutMs: READY_MS,
      extraArgs: [...lists.trustArgs, '--max-list-age', '1', '--ca-file', server.caFile],
    });
    daemons.push(d2);
    assert.equal((await listInForce(d2)).generatedAt, oldAt);
    assert.equal(await askOnce(d2.policyAddress, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');
    assert.equal(await d2.stop(), 0);
  });

  it('the accept command the daemon prints for list_too_old works as printed (https source: the refused copy in the state dir)', async (t) => {
    if (lists === null || server === null || toolOrSkip(t, 'xmlsec1') === null) return;
    const oldAt = isoDays(-50);
    server.setBehaviour({ kind: 'serve', body: lists.sign(GOOD, oldAt), etag: null });
    const stateDir = tempDir('accept-printed');
    const u = await startDaemonUnready({
      whitelist: server.url,
      stateDir,
      readyTimeoutMs: READY_MS,
      extraArgs: [...lists.trustArgs, '--ca-file', server.caFile],
    });
    const failed = await waitFor(
      'the refusal',
      async () => {
        try {
          const s = await listInForce({ httpAddress: u.httpAddress });
          return s.lastFailureReason === 'list_too_old' ? s : null;
        } catch {
          return null;
        }
      },
      60_000,
      200,
    );
    const m = /if this one is intended: (mssante-policyd check .*? --accept), then SIGHUP/.exec(failed.lastFailureDetail ?? '');
    assert.ok(m, failed.lastFailureDetail ?? '');
    const command = m[1]!;
    assert.match(command, new RegExp(`^mssante-policyd check ${stateDir}/refused-whitelist\\.xml --signer-ca `));
    const r = runPrintedCommand(command);
    assert.equal(r.code, 0, `${command}\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /^age: 50 days: TOO OLD/m);
    process.kill(await u.pid(), 'SIGHUP');
    const d = await u.ready;
    daemons.push(d);
    assert.equal((await listInForce(d)).generatedAt, oldAt);
    assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, VALID.sender)), 'DUNNO');
    assert.equal(await d.stop(), 0);
  });
});
