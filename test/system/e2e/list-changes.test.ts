/**
 * Issue 20 end to end, on lists built from the real list's 6 494 entries and re-signed by a test
 * signer (xmlsec1): a swap that adds, removes and moves a few domains is journaled exactly (HTTP,
 * metric, log, `diff`, `query --explain`, the refusal trace naming the list); a list moving 20 % of
 * the domains is refused as list_rebind while the previous list keeps answering, and `check
 * --state-dir` exits 3 on it; the journal survives a restart.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { normaliseDomain } from '../../../src/trust/domain.js';
import { parseListXml } from '../../../src/whitelist/xml.js';
import { runCli } from '../../support/cli.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { realListOrSkip } from '../../support/fixtures.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { TestPki } from '../../support/pki.js';
import { toolOrSkip } from '../../support/tools.js';
import { buildListXml, signList } from '../../support/xmlsec.js';

interface Entry {
  nom: string;
  dn: string;
  description: string;
}
interface Ref {
  sha256: string;
  generatedAt: string;
}
interface Change {
  from: Ref;
  to: Ref;
  appliedAt: string | null;
  added: string[];
  removed: string[];
  rebound: Array<{ domain: string; from: string[]; to: string[] }>;
  operatorsAdded: string[];
  operatorsRemoved: string[];
}
interface Status {
  sha256: string | null;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  lastFailureReason: string | null;
}
interface DomainAnswer {
  entries: Array<{ dnNormalised: string; cn: string }>;
  binding: string[];
  since: string | null;
  listSha256: string | null;
  changes: Array<{ kind: string; to: Ref; dnsFrom?: string[]; dnsTo?: string[] }>;
}

const T1 = '2026-04-19T00:00:00Z';
const T2 = '2026-04-20T00:00:00Z';
const T3 = '2026-04-21T00:00:00Z';
const NEW_OPERATOR = 'CN=mx.nouvel-operateur.test,OU=999,O=nouvel operateur,C=fr';
const HIJACKER = 'CN=mx.cle-detournee.test,OU=666,O=detournement,C=fr';
const CN_OF = (dn: string): string => /CN=([^,/]+)/i.exec(dn)![1]!.trim();

/** The real list's entries grouped by (normalised) domain, in file order. */
function realEntries(path: string): Map<string, Entry[]> {
  const parsed = parseListXml(readFileSync(path, 'utf8'));
  assert.ok(parsed.ok, 'the real list parses');
  const byDomain = new Map<string, Entry[]>();
  for (const e of parsed.list.entries) {
    const domain = normaliseDomain(e.nom);
    if (domain === null) continue;
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), { nom: e.nom, dn: e.dn, description: e.description }]);
  }
  return byDomain;
}

describe('list changes on the real list (journal, rebind guard, diff, explain)', { timeout: 900_000 }, () => {
  let daemon: DaemonHandle | null = null;
  after(async () => {
    await daemon?.stop();
  });

  it('journals a swap exactly, refuses a 20 % rebinding, keeps its history across a restart', async (t) => {
    const real = realListOrSkip(t);
    if (real === null || toolOrSkip(t, 'xmlsec1') === null || toolOrSkip(t, 'openssl') === null) return;
    const pki = new TestPki();
    const ca = pki.createCa('ca', [
      ['C', 'FR'],
      ['O', 'TEST-SANTE'],
      ['CN', 'AC TEST'],
    ]);
    const signer = pki.issue(
      'signer',
      [
        ['C', 'FR'],
        ['O', 'TEST ANS'],
        ['CN', 'liste.test'],
      ],
      ca,
      { usage: 'signing', notBefore: '20250101000000Z' },
    );
    const dir = mkdtempSync(join(tmpdir(), 'list-changes-'));
    const sign = (byDomain: Map<string, Entry[]>, generatedAt: string, file: string): string => {
      const entries = [...byDomain.values()].flat();
      const xml = signList(buildListXml(entries, generatedAt), { keyPath: signer.keyPath, certPath: signer.certPath });
      const path = join(dir, file);
      writeFileSync(path, xml);
      return path;
    };

    // L1: the real list as is. L2: 3 domains removed, 3 moved to another listed certificate, 3 added
    // (two under a listed certificate, one under a new one), one DN respelled in OpenSSL's form.
    const l1 = realEntries(real.list);
    const dnUse = new Map<string, number>();
    for (const list of l1.values()) for (const e of list) dnUse.set(e.dn, (dnUse.get(e.dn) ?? 0) + 1);
    // Domains with one entry whose certificate serves many others: removing or moving them takes no identity away.
    const plain = [...l1.keys()]
      .sort()
      .filter((d) => l1.get(d)!.length === 1 && dnUse.get(l1.get(d)![0]!.dn)! >= 5 && !/[\\+"]/.test(l1.get(d)![0]!.dn));
    const removed = plain.slice(100, 103);
    const target = l1.get(plain[2000]!)![0]!.dn;
    const moved = plain
      .slice(200)
      .filter((d) => CN_OF(l1.get(d)![0]!.dn) !== CN_OF(target))
      .slice(0, 3);
    const respelled = plain.filter((d) => !moved.includes(d) && !removed.includes(d))[300]!;
    const added = ['ajout-1.change-test.mssante.fr', 'ajout-2.change-test.mssante.fr', 'ajout-3.change-test.mssante.fr'];
    const l2 = new Map(l1);
    for (const d of removed) l2.delete(d);
    for (const d of moved) l2.set(d, [{ ...l1.get(d)![0]!, dn: target }]);
    const original = l1.get(respelled)![0]!;
    const openssl = `/${original.dn
      .split(',')
      .map((p) => p.trim())
      .reverse()
      .join('/')}`;
    l2.set(respelled, [{ ...original, dn: openssl }]);
    l2.set(added[0]!, [{ nom: added[0]!, dn: target, description: 'ajout' }]);
    l2.set(added[1]!, [{ nom: added[1]!, dn: target, description: 'ajout' }]);
    l2.set(added[2]!, [{ nom: added[2]!, dn: NEW_OPERATOR, description: 'ajout' }]);
    // L3: 20 % of L2's domains moved onto one certificate nobody listed before.
    const l3 = new Map(l2);
    const hijacked = [...l2.keys()].sort().slice(0, Math.ceil(l2.size * 0.2));
    for (const d of hijacked) l3.set(d, [{ nom: d, dn: HIJACKER, description: 'x' }]);

    const file1 = sign(l1, T1, 'l1.xml');
    const file2 = sign(l2, T2, 'l2.xml');
    const file3 = sign(l3, T3, 'l3.xml');
    const served = join(dir, 'served.xml');
    writeFileSync(served, readFileSync(file1));
    const args = ['--signer', signer.certPath, '--max-list-age', '0'];
    daemon = await startDaemon({ whitelist: served, extraArgs: args });
    const http = (path: string): Promise<Response> => fetch(`http://${daemon!.httpAddress}${path}`);
    const status = async (): Promise<Status> => (await (await http('/v1/whitelist')).json()) as Status;
    const lookup = async (d: string): Promise<DomainAnswer> =>
      (await (await http(`/v1/whitelist/domains/${d}`)).json()) as DomainAnswer;
    const reloadWith = async (file: string): Promise<Status> => {
      const before = await status();
      writeFileSync(served, readFileSync(file));
      daemon!.signal('SIGHUP');
      for (let deadline = Date.now() + 240_000; Date.now() < deadline; await sleep(200)) {
        const now = await status();
        if (now.lastSuccessAt !== before.lastSuccessAt || now.lastFailureAt !== before.lastFailureAt) return now;
      }
      throw new Error(`reload did not finish:\n${daemon!.logs.slice(-20).join('\n')}`);
    };
    const l1Sha = (await status()).sha256!;
    const movedFrom = new Map<string, string[]>();
    for (const d of moved) movedFrom.set(d, (await lookup(d)).binding);
    assert.deepEqual(await http('/v1/whitelist/changes').then((r) => r.json()), []);

    // ---- the swap L1 → L2 is journaled exactly
    const s2 = await reloadWith(file2);
    assert.equal(s2.lastFailureReason, null, 'L2 is taken');
    const l2Sha = s2.sha256!;
    const targetDisplay = (await lookup(added[0]!)).binding;
    const changes = (await (await http('/v1/whitelist/changes')).json()) as Change[];
    assert.equal(changes.length, 1);
    const change = changes[0]!;
    assert.deepEqual(change.from, { sha256: l1Sha, generatedAt: T1 });
    assert.deepEqual(change.to, { sha256: l2Sha, generatedAt: T2 });
    assert.deepEqual(change.added, [...added].sort());
    assert.deepEqual(change.removed, [...removed].sort());
    assert.deepEqual(
      change.rebound,
      [...moved].sort().map((d) => ({ domain: d, from: movedFrom.get(d), to: targetDisplay })),
      'the three moved domains, and not the respelled one',
    );
    assert.deepEqual(change.operatorsAdded, [NEW_OPERATOR]);
    assert.deepEqual(change.operatorsRemoved, []);
    const metrics = await (await http('/metrics')).text();
    for (const [kind, n] of [
      ['added', 3],
      ['removed', 3],
      ['rebound', 3],
    ] as const) {
      assert.match(metrics, new RegExp(`^mssante_policyd_whitelist_changes_total\\{kind="${kind}"\\} ${n}$`, 'm'));
    }
    const logged = daemon.logs.map((l) => (l.startsWith('{') ? (JSON.parse(l) as Record<string, unknown>) : {}));
    const event = logged.find((l) => l.event === 'list_changed')!;
    assert.ok(event, 'list_changed logged');
    assert.deepEqual(
      [event.added, event.removed, event.rebound, event.to_sha256, event.rebound_domains],
      [3, 3, 3, l2Sha, [...moved].sort()],
    );

    // `diff` prints the same change from the files.
    const diff = runCli(['diff', file1, file2, '--signer', signer.certPath, '--json'], { timeoutMs: 300_000 });
    assert.equal(diff.code, 0, diff.stderr);
    assert.deepEqual(JSON.parse(diff.stdout), { ...change, appliedAt: null });
    const text = runCli(['diff', file1, file2, '--signer', signer.certPath], { timeoutMs: 300_000 });
    assert.match(
      text.stdout,
      new RegExp(`domains moved to other certificates: 3 .*\\n  ~ ${[...moved].sort()[0]!.replace(/\./g, '\\.')}`),
    );
    assert.equal(runCli(['diff', file1, '--signer', signer.certPath]).code, 2);
    const tampered = join(dir, 'tampered.xml');
    writeFileSync(tampered, readFileSync(file2, 'utf8').replace(added[0]!, 'ajout-x.change-test.mssante.fr'));
    assert.equal(runCli(['diff', file1, tampered, '--signer', signer.certPath], { timeoutMs: 300_000 }).code, 1);

    // A moved domain: its binding, since the list that moved it, the move itself.
    const m = await lookup(moved[0]!);
    assert.deepEqual([m.binding, m.since, m.listSha256], [targetDisplay, T2, l2Sha]);
    assert.deepEqual(
      m.changes.map((c) => [c.kind, c.to.sha256, c.dnsFrom, c.dnsTo]),
      [['rebound', l2Sha, movedFrom.get(moved[0]!), targetDisplay]],
    );
    assert.equal((await lookup(plain[5]!)).since, null, 'older than the journal');
    const gone = await http(`/v1/whitelist/domains/${removed[0]}`);
    assert.equal(gone.status, 404);
    assert.deepEqual(
      ((await gone.json()) as DomainAnswer).changes.map((c) => [c.kind, c.to.sha256]),
      [['removed', l2Sha]],
    );

    // The 3 a.m. refusal: the moved domain's old operator is refused, the trace names the list; explain tells why.
    const oldCn = CN_OF(l1.get(moved[0]!)![0]!.dn);
    const answer = await askOnce(daemon.policyAddress, postfixRequest(oldCn, `someone@${moved[0]}`));
    assert.match(answer, /^550 5\.7\.1/);
    await sleep(500);
    const trace = daemon.logs
      .filter((l) => l.includes('"event":"decision"') && l.includes('"result":"reject"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.sender_domain === moved[0]);
    assert.equal(trace?.list_sha256, l2Sha, 'the refusal trace carries the sha256 of the list in force');
    const explain = runCli([
      'query',
      '--policy',
      daemon.policyAddress,
      '--http',
      daemon.httpAddress,
      '--explain',
      `ccert_subject=${oldCn}`,
      `sender=someone@${moved[0]}`,
      'encryption_protocol=TLSv1.3',
    ]);
    assert.equal(explain.code, 0, explain.stderr);
    assert.match(explain.stdout, /^action=550 /m);
    assert.match(explain.stdout, new RegExp(`since: ${T2}`));
    assert.match(explain.stdout, /MOVED to other certificates by the list generated 2026-04-20T00:00:00Z/);

    // ---- L3 moves 20 %: refused, L2 keeps answering; check --state-dir exits 3
    const s3 = await reloadWith(file3);
    assert.equal(s3.lastFailureReason, 'list_rebind');
    assert.equal(s3.sha256, l2Sha, 'the list in force stays');
    const stillListed = hijacked.find((d) => plain.includes(d) && !moved.includes(d) && !removed.includes(d) && d !== respelled)!;
    const keptCn = CN_OF(l1.get(stillListed)![0]!.dn);
    assert.equal(await askOnce(daemon.policyAddress, postfixRequest(keptCn, `a@${stillListed}`)), 'DUNNO');
    assert.match(
      await (await http('/metrics')).text(),
      /^mssante_policyd_whitelist_load_failures_total\{reason="list_rebind"\} 1$/m,
    );
    assert.equal(((await (await http('/v1/whitelist/changes')).json()) as Change[]).length, 1, 'a refused list is not journaled');
    const check = runCli(['check', file3, '--signer', signer.certPath, '--max-list-age', '0', '--state-dir', daemon.stateDir], {
      timeoutMs: 300_000,
    });
    assert.equal(check.code, 3, check.stdout + check.stderr);
    assert.match(check.stdout, /guard against .*: refuse — list would move \d+ of \d+ domains onto other certificates/);
    const json = runCli(
      ['check', file3, '--signer', signer.certPath, '--max-list-age', '0', '--state-dir', daemon.stateDir, '--json'],
      { timeoutMs: 300_000 },
    );
    const report = JSON.parse(json.stdout) as { guard: { reason: string; rebound?: number } };
    assert.equal(report.guard.reason, 'list_rebind');

    // ---- restart on the same state dir: L2 from the state dir, L3 refused again, the journal kept
    const stateDir = daemon.stateDir;
    await daemon.stop();
    daemon = await startDaemon({ whitelist: served, stateDir, extraArgs: args });
    const restarted = (await (await http('/v1/whitelist/changes')).json()) as Change[];
    assert.deepEqual(restarted, changes);
    assert.equal((await lookup(moved[0]!)).since, T2);
  });
});
