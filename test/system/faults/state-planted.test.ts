/**
 * The attack of issue 21: whoever can write --state-dir plants a list binding a victim's domain to
 * the attacker's certificate, with a whitelist.json whose trustKey and sha256 are consistent (both
 * computable from public files), dated ahead so that it would also lock out every genuine list as
 * list_older. Before the fix the daemon served it at the next start (the attacker's mail: DUNNO; the
 * genuine operator's: 550). Now the stored copy is verified like a fresh list: the planted one is
 * refused as state_unverified, and the source's genuine list goes in force in its place.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { trustKey } from '../../../src/whitelist/state.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import {
  BASE_ENTRIES,
  SIGNER_CN,
  VALID,
  createListSigner,
  httpGet,
  isoDays,
  listInForce,
  logRecords,
  metricNow,
  replaceFile,
  startDaemonUnready,
  tempDir,
  waitFor,
  type ListSigner,
} from '../../support/faults.js';
import { subjectRfc2253 } from '../../support/pki.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { toolOrSkip } from '../../support/tools.js';
import { buildListXml } from '../../support/xmlsec.js';

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const ATTACKER_CN = 'mx.attacker.test';
const ATTACKER_DN = subjectRfc2253([
  ['C', 'FR'],
  ['O', 'ATTACKER'],
  ['CN', ATTACKER_CN],
]);
const VICTIM_SENDER = VALID.sender;

describe('a list planted in the state dir (issue 21, point 1)', { timeout: 900_000 }, () => {
  let lists: ListSigner | null = null;
  const daemons: DaemonHandle[] = [];
  const dirs: string[] = [];

  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    lists?.cleanup();
  });

  function ready(t: TestContext): ListSigner | null {
    if (toolOrSkip(t, 'xmlsec1') === null || toolOrSkip(t, 'openssl') === null) return null;
    lists ??= createListSigner();
    return lists;
  }

  function workDir(prefix: string): string {
    const dir = tempDir(prefix);
    dirs.push(dir);
    return dir;
  }

  /** The planted copies: unsigned, and signed by the attacker's own signer (a certificate of the attacker's CA). */
  function plantedLists(l: ListSigner): Array<[string, string]> {
    const entries = [...BASE_ENTRIES.filter((e) => e.nom !== 'op1.mssante.test'), { nom: 'op1.mssante.test', dn: ATTACKER_DN }];
    const ahead = isoDays(30);
    const attackerSigner = l.pki.issue(
      'attacker-signer',
      [
        ['C', 'FR'],
        ['O', 'ATTACKER'],
        ['CN', SIGNER_CN],
      ],
      l.pki.createCa('attacker-ca', [
        ['C', 'FR'],
        ['CN', 'ATTACKER CA'],
      ]),
      { usage: 'signing' },
    );
    return [
      ['unsigned', buildListXml(entries, ahead)],
      ['signed by the attacker', l.sign(entries, ahead, attackerSigner)],
    ];
  }

  /** whitelist.json as the daemon writes it, made consistent with the planted bytes and the daemon's trust settings. */
  function plant(stateDir: string, l: ListSigner, source: string, bytes: string): void {
    writeFileSync(join(stateDir, 'whitelist.xml'), bytes);
    const trust = { signer: [], signerCa: [l.ca.certPath], signerCn: [SIGNER_CN], signerSubject: [] };
    const meta = {
      source,
      sha256: sha256(bytes),
      generatedAt: isoDays(30),
      verifiedAt: isoDays(0),
      validators: null,
      signer: {
        subject: `C=FR\nO=TEST ANS\nCN=${SIGNER_CN}`,
        issuer: 'C=FR\nO=TEST-SANTE\nCN=AC TEST ELEMENTAIRE ORGANISATIONS',
        validFrom: isoDays(-400),
        validTo: isoDays(365),
        fingerprint256: 'AA',
        matched: 'CA + --signer-cn',
        pem: l.signer.certPem,
      },
      trustKey: trustKey(trust),
    };
    writeFileSync(join(stateDir, 'whitelist.json'), JSON.stringify(meta, null, 2));
  }

  it('the planted copy is refused as state_unverified; the genuine list is put in force and replaces it', async (t) => {
    const l = ready(t);
    if (l === null) return;
    const genuine = l.sign(BASE_ENTRIES, isoDays(-2));
    const source = join(workDir('source'), 'list.xml');
    replaceFile(source, genuine);
    for (const [name, planted] of plantedLists(l)) {
      const stateDir = workDir(`planted-${name.replace(/ /g, '-')}`);
      plant(stateDir, l, source, planted);
      const d = await startDaemon({ whitelist: source, stateDir, extraArgs: [...l.trustArgs], readyTimeoutMs: 180_000 });
      daemons.push(d);
      const refused = await waitFor('the state_unverified log line', () =>
        logRecords(d, 'list_load_failed').find((r) => r.trigger === 'state'),
      );
      assert.equal(refused.reason, 'state_unverified', name);
      assert.match(String(refused.detail), /^stored list: (list_unsigned|signature_missing|signer_untrusted): /, name);
      assert.equal(logRecords(d, 'state_refused').length, 1, `${name}: said once, with its cause`);
      assert.equal(await metricNow(d, 'mssante_policyd_whitelist_load_failures_total', { reason: 'state_unverified' }), 1);

      const inForce = await listInForce(d);
      assert.equal(inForce.sha256, sha256(genuine), `${name}: the genuine list is in force`);
      assert.match(await askOnce(d.policyAddress, postfixRequest(ATTACKER_CN, VICTIM_SENDER)), /^550 5\.7\.1 /, name);
      assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, VICTIM_SENDER)), 'DUNNO', name);
      assert.equal(readFileSync(join(stateDir, 'whitelist.xml'), 'utf8'), genuine, `${name}: the copy is the genuine list again`);
      assert.equal(await d.stop(), 0);
    }
  });

  it('with the source down, the planted copy is not served (451 for everyone, /readyz 503) until the genuine list comes', async (t) => {
    const l = ready(t);
    if (l === null) return;
    const [, planted] = plantedLists(l)[0]!;
    const stateDir = workDir('planted-down');
    const source = join(workDir('down'), 'list.xml'); // does not exist yet: source_io
    plant(stateDir, l, source, planted);
    const u = await startDaemonUnready({ whitelist: source, stateDir, extraArgs: [...l.trustArgs] });
    await waitFor('/healthz', async () => (await httpGet(u, '/healthz')).status === 200, 120_000);
    await waitFor(
      'the planted copy refused',
      async () => (await metricNow(u, 'whitelist_load_failures_total', { reason: 'state_unverified' })) === 1,
      120_000,
    );
    await waitFor('the first fetch to fail', async () => (await listInForce(u)).lastFailureReason === 'source_io', 120_000);
    assert.equal((await httpGet(u, '/readyz')).status, 503);
    assert.match(await askOnce(u.policyAddress, postfixRequest(ATTACKER_CN, VICTIM_SENDER)), /^451 4\.3\.0 /);
    assert.match(await askOnce(u.policyAddress, postfixRequest(VALID.cn, VICTIM_SENDER)), /^451 4\.3\.0 /);
    assert.equal(await metricNow(u, 'decisions_total', { result: 'pass' }), 0, 'the planted binding never answered');

    const genuine = l.sign(BASE_ENTRIES, isoDays(-2));
    replaceFile(source, genuine);
    process.kill(await u.pid(), 'SIGHUP');
    const d = await u.ready;
    daemons.push(d);
    assert.equal((await listInForce(d)).sha256, sha256(genuine));
    assert.match(await askOnce(d.policyAddress, postfixRequest(ATTACKER_CN, VICTIM_SENDER)), /^550 5\.7\.1 /);
    assert.equal(await askOnce(d.policyAddress, postfixRequest(VALID.cn, VICTIM_SENDER)), 'DUNNO');
    assert.equal(await d.stop(), 0);
  });

  it('serve refuses a state dir that group or others may write, or a state file of another user: exit 1, the fix in the message', async (t) => {
    const l = ready(t);
    if (l === null) return;
    const source = join(workDir('source-modes'), 'list.xml');
    replaceFile(source, l.sign(BASE_ENTRIES, isoDays(-2)));
    const open = workDir('state-open');
    chmodSync(open, 0o777);
    await assert.rejects(
      startDaemon({ whitelist: source, stateDir: open, extraArgs: [...l.trustArgs] }),
      /daemon exited with code 1[\s\S]*refusing the state dir[\s\S]*mode 0777, writable by its group: chmod go-w/,
    );
    const foreign = workDir('state-foreign');
    writeFileSync(join(foreign, 'whitelist.xml'), 'planted');
    chownSync(join(foreign, 'whitelist.xml'), 4321, 4321);
    await assert.rejects(
      startDaemon({ whitelist: source, stateDir: foreign, extraArgs: [...l.trustArgs] }),
      /daemon exited with code 1[\s\S]*whitelist\.xml is owned by uid 4321/,
    );
  });
});
