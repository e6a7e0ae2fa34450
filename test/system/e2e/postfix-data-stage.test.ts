/**
 * Fail closed when the check sits in smtpd_data_restrictions: a real Postfix whose MSSante lines
 * are deploy/postfix/main.cf.policy, except that check_policy_service moves from
 * smtpd_recipient_restrictions to smtpd_data_restrictions (protocol_state=DATA). An unlisted
 * certificate is refused at DATA, a listed one is delivered. And a check asked where nothing can be
 * decided (CONNECT, EHLO, VRFY, ETRN, unknown) answers DUNNO but is counted and logged.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REASONS } from '../../../src/trust/reasons.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { operatorSubject, TestPki, type Issued } from '../../support/pki.js';
import { PolicyClient } from '../../support/policy-client.js';
import { startPostfix, type PostfixInstance } from '../../support/postfix.js';
import { postfixE2eMissing } from '../../support/postfix-scenarios.js';
import { sendMail, type SendResult } from '../../support/swaks.js';
import { buildListXml } from '../../support/xmlsec.js';

const RECIPIENT = 'dr.martin@destinataire.mssante.test';
const missing = postfixE2eMissing();

if (missing !== null && process.env.CI === 'true') {
  test('Postfix with the check in smtpd_data_restrictions: prerequisites', () => {
    throw new Error(`CI=true and ${missing}`);
  });
} else {
  describe('Postfix with check_policy_service in smtpd_data_restrictions', { skip: missing ?? false }, () => {
    let dir: string;
    let ca: Issued;
    let listed: Issued;
    let unlisted: Issued;
    let daemon: DaemonHandle;
    let postfix: PostfixInstance;

    before(async () => {
      const pki = new TestPki();
      dir = pki.dir;
      ca = pki.createCa('igc-sante-test', [
        ['C', 'FR'],
        ['O', 'ASIP-SANTE'],
        ['CN', 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'],
      ]);
      const server = pki.issue('mx-destinataire', operatorSubject('mx.destinataire.mssante.test', 'DESTINATAIRE'), ca, {
        usage: 'tls',
        dnsNames: ['mx.destinataire.mssante.test'],
      });
      listed = pki.issue('op1', operatorSubject('mx.op1.mssante.test', 'OPERATEUR UN', '318310021300001'), ca, { usage: 'tls' });
      unlisted = pki.issue('op3', operatorSubject('mx.op3.mssante.test', 'OPERATEUR TROIS', '318310021300003'), ca, {
        usage: 'tls',
      });
      const whitelist = join(dir, 'whitelist.xml');
      const generatedAt = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
      writeFileSync(whitelist, buildListXml([{ nom: 'op1.mssante.test', dn: listed.subjectRfc2253 }], generatedAt));
      daemon = await startDaemon({ whitelist });
      postfix = await startPostfix({
        variant: 'policy',
        serviceAddress: daemon.policyAddress,
        caFile: ca.certPath,
        serverCert: server,
        recipients: [RECIPIENT],
        extraMainCf: [
          'smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unauth_destination',
          'smtpd_data_restrictions = check_policy_service { $mssante_policy_service, timeout=10s, { default_action = $smtpd_policy_service_default_action } }',
        ],
      });
    });

    after(async () => {
      await postfix?.stop();
      await daemon?.stop();
      if (process.env.MSSANTE_KEEP_TMP !== '1')
        for (const d of [dir, daemon?.stateDir]) if (d !== undefined) rmSync(d, { recursive: true, force: true });
    });

    const context = (run: SendResult): string =>
      `\n--- swaks\n${run.transcript}\n--- postfix log (tail)\n${postfix.log().split('\n').slice(-20).join('\n')}\n--- daemon\n${daemon.logs.slice(-10).join('\n')}`;

    test('the check really is at DATA only in the running main.cf', () => {
      assert.match(postfix.mainCf, /^smtpd_data_restrictions = check_policy_service/m);
      assert.match(postfix.mainCf, /^smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unauth_destination$/m);
    });

    test('unlisted certificate: RCPT accepted, DATA refused 550 5.7.1 cert_not_listed, nothing delivered', async () => {
      const run = await sendMail({ port: postfix.port, to: RECIPIENT, tls: true, from: 'dave@op1.mssante.test', cert: unlisted });
      assert.equal(run.stages.find((s) => s.command === 'RCPT')?.code, 250, context(run));
      const data = run.stages.find((s) => s.command === 'DATA');
      assert.equal(data?.code, 550, context(run));
      assert.equal(data?.enhanced, '5.7.1');
      assert.ok(data?.text.includes(REASONS.cert_not_listed.en), data?.text);
      assert.deepEqual(postfix.queue(), []);
      assert.equal(
        postfix.messages(RECIPIENT).some((m) => m.includes(run.testId)),
        false,
      );
    });

    test('listed certificate and domain: DATA accepted, delivered', async () => {
      const run = await sendMail({ port: postfix.port, to: RECIPIENT, tls: true, from: 'alice@op1.mssante.test', cert: listed });
      assert.equal(run.exitCode, 0, context(run));
      assert.equal(run.stages.find((s) => s.command === '.')?.code, 250, context(run));
      await postfix.waitForMessage(RECIPIENT, run.testId);
    });

    test('the DATA-stage decisions were counted, no misplaced check', async () => {
      const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
      assert.match(text, /^mssante_policyd_decisions_total\{[^}]*reason="cert_not_listed"[^}]*\} [1-9]/m);
      assert.match(text, /^mssante_policyd_decisions_total\{[^}]*reason="ok"[^}]*\} [1-9]/m);
      assert.doesNotMatch(text, /^mssante_policyd_misplaced_checks_total\{[^}]*\} [1-9]/m);
    });

    test('a check asked at CONNECT, EHLO, VRFY, ETRN or an unknown stage: DUNNO, counted and logged', async () => {
      const client = await PolicyClient.connect(daemon.policyAddress);
      try {
        for (const state of ['CONNECT', 'EHLO', 'VRFY', 'ETRN', 'SOMETHING-NEW']) {
          assert.equal(
            await client.ask({
              protocol_state: state,
              encryption_protocol: 'TLSv1.3',
              ccert_subject: 'mx.op3.mssante.test',
              sender: 'x@op1.mssante.test',
            }),
            'DUNNO',
            state,
          );
        }
      } finally {
        client.close();
      }
      const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
      for (const stage of ['connect', 'helo', 'vrfy', 'etrn', 'other']) {
        assert.match(text, new RegExp(`^mssante_policyd_misplaced_checks_total\\{stage="${stage}"\\} 1$`, 'm'), stage);
      }
      const deadline = Date.now() + 10_000;
      while (daemon.logs.filter((l) => l.includes('"event":"misplaced_check"')).length < 5 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(
        daemon.logs.filter((l) => l.includes('"event":"misplaced_check"')).length,
        5,
        daemon.logs.slice(-10).join('\n'),
      );
    });
  });
}
