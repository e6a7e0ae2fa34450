/**
 * A renewal behind a listed identity, through a real Postfix (deploy/postfix/main.cf.policy) and the
 * real daemon: two certificates with the same listed subject, one after the other, as an operator's
 * MX presents them across a renewal. Both mails are accepted and delivered — a new certificate never
 * refuses mail — and the second is seen as a certificate change: logged with both fingerprints as
 * Postfix computed them (ccert_fingerprint, SHA-256 per the deploy file), counted, listed at /v1/peers.
 */
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { operatorSubject, TestPki, type Issued } from '../../support/pki.js';
import { startPostfix, type PostfixInstance } from '../../support/postfix.js';
import { postfixE2eMissing } from '../../support/postfix-scenarios.js';
import { sendMail, type SendResult } from '../../support/swaks.js';
import { buildListXml } from '../../support/xmlsec.js';

const RECIPIENT = 'dr.martin@destinataire.mssante.test';
const LISTED_CN = 'mx.op1.mssante.test';

/** `sha256:AB:CD:…`: the daemon's canonical form of a digest. */
function canonical(digest: Buffer): string {
  return `sha256:${digest
    .toString('hex')
    .toUpperCase()
    .replace(/(..)(?!$)/g, '$1:')}`;
}

/** What Postfix sends as ccert_fingerprint (SHA-256 of the DER certificate), canonical. */
function certFingerprint(cert: Issued): string {
  return canonical(Buffer.from(new X509Certificate(readFileSync(cert.certPath)).fingerprint256.replace(/:/g, ''), 'hex'));
}

/** What Postfix sends as ccert_pubkey_fingerprint (SHA-256 of the DER SubjectPublicKeyInfo), canonical. */
function pubkeyFingerprint(cert: Issued): string {
  const spki = new X509Certificate(readFileSync(cert.certPath)).publicKey.export({ type: 'spki', format: 'der' });
  return canonical(createHash('sha256').update(spki).digest());
}

interface LogLine {
  readonly event?: string;
  readonly [field: string]: unknown;
}

function events(daemon: DaemonHandle, name: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of daemon.logs) {
    if (!line.startsWith('{')) continue;
    const parsed = JSON.parse(line) as LogLine;
    if (parsed.event === name) out.push(parsed);
  }
  return out;
}

/** Polls (liveness deadline, not a speed claim) until `check` holds. */
async function eventually<T>(what: string, check: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const missing = postfixE2eMissing();
if (missing !== null && process.env.CI === 'true') {
  test('Postfix renewal behind a listed identity: prerequisites', () => {
    throw new Error(`CI=true and ${missing}`);
  });
}

describe('Postfix + main.cf.policy: a listed identity renews its certificate', { skip: missing ?? false }, () => {
  let pki: TestPki;
  let op1: Issued;
  let op1Renewed: Issued;
  let daemon: DaemonHandle;
  let postfix: PostfixInstance;

  before(async () => {
    pki = new TestPki();
    const ca = pki.createCa('igc-sante-test', [
      ['C', 'FR'],
      ['O', 'ASIP-SANTE'],
      ['CN', 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'],
    ]);
    const server = pki.issue('mx-destinataire', operatorSubject('mx.destinataire.mssante.test', 'DESTINATAIRE'), ca, {
      usage: 'tls',
      dnsNames: ['mx.destinataire.mssante.test'],
    });
    // The same subject twice, two keys: what the operator's MX presents before and after its renewal.
    const subject = operatorSubject(LISTED_CN, 'OPERATEUR UN', '318310021300001');
    op1 = pki.issue('op1', subject, ca, { usage: 'tls' });
    op1Renewed = pki.issue('op1-renewed', subject, ca, { usage: 'tls' });
    const whitelist = join(pki.dir, 'whitelist.xml');
    const generatedAt = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    writeFileSync(whitelist, buildListXml([{ nom: 'op1.mssante.test', dn: op1.subjectRfc2253 }], generatedAt));
    daemon = await startDaemon({ whitelist });
    postfix = await startPostfix({
      variant: 'policy',
      serviceAddress: daemon.policyAddress,
      caFile: ca.certPath,
      serverCert: server,
      recipients: [RECIPIENT],
    });
  });

  after(async () => {
    await postfix?.stop();
    await daemon?.stop();
    if (process.env.MSSANTE_KEEP_TMP !== '1') {
      for (const dir of [pki?.dir, daemon?.stateDir]) if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    }
  });

  function context(run: SendResult): string {
    const pf = postfix.log().split('\n').slice(-20).join('\n');
    return `\n--- swaks\n${run.transcript}\n--- postfix log (tail)\n${pf}\n--- daemon log (tail)\n${daemon.logs.slice(-10).join('\n')}`;
  }

  async function sendAndDeliver(cert: Issued): Promise<void> {
    const run = await sendMail({ port: postfix.port, to: RECIPIENT, tls: true, from: 'secretariat@op1.mssante.test', cert });
    assert.equal(run.exitCode, 0, `swaks failed${context(run)}`);
    assert.equal(run.stages.find((s) => s.command === '.')?.code, 250, `not accepted${context(run)}`);
    await postfix.waitForMessage(RECIPIENT, run.testId, 60_000);
  }

  async function changesCounted(): Promise<number> {
    const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
    const m = /^mssante_policyd_peer_certificate_changes_total\{frontend="policy"\} (\d+)$/m.exec(text);
    assert.ok(m, 'the counter is exposed');
    return Number(m[1]);
  }

  test('both certificates are accepted; the second is logged and counted as a change with both fingerprints', async () => {
    await sendAndDeliver(op1);
    // The first certificate is recorded (a first sighting is no change) before the renewal arrives.
    await eventually('the first certificate in /v1/peers', async () => {
      const body = (await (await fetch(`http://${daemon.httpAddress}/v1/peers`)).json()) as { identities: number };
      return body.identities === 1 ? true : undefined;
    });
    assert.equal(await changesCounted(), 0);
    assert.deepEqual(events(daemon, 'peer_certificate_changed'), []);

    await sendAndDeliver(op1Renewed);
    const [change] = await eventually('peer_certificate_changed', () => {
      const found = events(daemon, 'peer_certificate_changed');
      return found.length > 0 ? found : undefined;
    });
    assert.equal(change!.identity, LISTED_CN);
    assert.equal(change!.previous_fingerprint, certFingerprint(op1));
    assert.equal(change!.fingerprint, certFingerprint(op1Renewed));
    assert.equal(change!.pubkey_fingerprint, pubkeyFingerprint(op1Renewed));
    assert.equal(change!.frontend, 'policy');
    assert.notEqual(certFingerprint(op1), certFingerprint(op1Renewed));
    assert.equal(await changesCounted(), 1);

    // Back to the first certificate (a second MX not renewed yet): known, so no new change.
    await sendAndDeliver(op1);
    assert.equal(await changesCounted(), 1);
    assert.equal(events(daemon, 'peer_certificate_changed').length, 1);
  });

  test('/v1/peers lists the identity with both fingerprints, first and last seen', async () => {
    const body = (await (await fetch(`http://${daemon.httpAddress}/v1/peers`)).json()) as {
      identities: number;
      peers: Array<{
        identity: string;
        fingerprints: Array<{ fingerprint: string; firstSeen: string; lastSeen: string; frontend: string }>;
      }>;
    };
    assert.equal(body.identities, 1);
    const [peer] = body.peers;
    assert.equal(peer?.identity, LISTED_CN);
    assert.deepEqual(
      peer.fingerprints.map((f) => f.fingerprint).sort(),
      [certFingerprint(op1), certFingerprint(op1Renewed)].sort(),
    );
    for (const f of peer.fingerprints) {
      assert.equal(f.frontend, 'policy');
      assert.ok(Date.parse(f.firstSeen) <= Date.parse(f.lastSeen), 'first seen before last seen');
    }
  });

  test('the history survives a restart (peers.json in the state dir)', async () => {
    const stateDir = daemon.stateDir;
    const policy = daemon.policyAddress;
    const http = daemon.httpAddress;
    assert.equal(await daemon.stop(), 0);
    const saved = JSON.parse(readFileSync(join(stateDir, 'peers.json'), 'utf8')) as { identities: Array<{ identity: string }> };
    assert.deepEqual(
      saved.identities.map((i) => i.identity),
      [LISTED_CN],
    );
    daemon = await startDaemon({ whitelist: join(pki.dir, 'whitelist.xml'), stateDir, listen: { policy, http } });
    // The renewed certificate again: known from before the restart, so no change.
    await sendAndDeliver(op1Renewed);
    assert.equal(await changesCounted(), 0);
    const body = (await (await fetch(`http://${daemon.httpAddress}/v1/peers`)).json()) as {
      peers: Array<{ fingerprints: unknown[] }>;
    };
    assert.equal(body.peers[0]?.fingerprints.length, 2);
  });
});
