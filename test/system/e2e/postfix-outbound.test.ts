/**
 * The sending side with real Postfix on both ends: an outbound relay loading
 * deploy/postfix/main.cf.outbound + master.cf.outbound as shipped asks the daemon's socketmap tables
 * for transport, TLS policy and the recipient check; it delivers to a receiving Postfix (the
 * main.cf.policy MX, checking the relay's certificate through the same daemon) over mandatory,
 * verified TLS; it refuses recipients outside the list at RCPT with the reason; with the daemon
 * down it defers (4xx) and never bounces.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { RECIPIENT_DOMAIN_NOT_LISTED } from '../../../src/trust/reasons.js';
import { freePort, startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { operatorSubject, TestPki, type Issued } from '../../support/pki.js';
import { REPO_ROOT } from '../../support/fixtures.js';
import { POSTFIX_DEPLOY_DIR, startPostfix, type PostfixInstance } from '../../support/postfix.js';
import { startRelay, type RelayInstance } from '../../support/postfix-relay.js';
import { postfixE2eMissing } from '../../support/postfix-scenarios.js';
import { sendMail, type SendResult } from '../../support/swaks.js';
import { buildListXml } from '../../support/xmlsec.js';

const RECIPIENT = 'dr.martin@destinataire.mssante.test';
const SENDER = 'alice@op1.mssante.test';
/** The MX certificate names the host of the operator that hosts the domain, not a name under the domain. */
const MX_NAME = 'mx.hebergeur-sante.test';
/** Safety net for Postfix's own queue runs on a loaded machine, not a timing assertion. */
const DELIVERY_WAIT_MS = 90_000;

const missing = postfixE2eMissing();
if (missing !== null && process.env.CI === 'true') {
  test('outbound relay e2e: prerequisites', () => {
    throw new Error(`CI=true and ${missing}`);
  });
} else {
  describe(
    'Postfix outbound relay (deploy/postfix/main.cf.outbound + master.cf.outbound) + socketmap tables',
    { skip: missing ?? false },
    () => {
      let ca: Issued;
      let pkiDir: string;
      let daemon: DaemonHandle;
      let receiver: PostfixInstance;
      let relay: RelayInstance;

      before(async () => {
        const pki = new TestPki();
        pkiDir = pki.dir;
        ca = pki.createCa('igc-sante-test', [
          ['C', 'FR'],
          ['O', 'ASIP-SANTE'],
          ['OU', 'IGC-SANTE TEST'],
          ['CN', 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'],
        ]);
        // The receiving MX's certificate names its host, not the recipient domain (as MSSante MX certificates do).
        const mx = pki.issue('mx-destinataire', operatorSubject(MX_NAME, 'DESTINATAIRE'), ca, {
          usage: 'tls',
          dnsNames: [MX_NAME],
        });
        const relayCert = pki.issue(
          'relais-op1',
          operatorSubject('relais.op1.mssante.test', 'OPERATEUR UN', '318310021300001'),
          ca,
          { usage: 'tls', dnsNames: ['relais.op1.mssante.test'] },
        );
        const whitelist = join(pki.dir, 'whitelist.xml');
        const generatedAt = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
        writeFileSync(
          whitelist,
          buildListXml(
            [
              { nom: 'op1.mssante.test', dn: relayCert.subjectRfc2253 },
              { nom: 'destinataire.mssante.test', dn: mx.subjectRfc2253 },
            ],
            generatedAt,
          ),
        );
        const policyAddress = `127.0.0.1:${await freePort()}`;
        const socketmapAddress = `127.0.0.1:${await freePort()}`;
        receiver = await startPostfix({
          variant: 'policy',
          serviceAddress: policyAddress,
          caFile: ca.certPath,
          serverCert: mx,
          recipients: [RECIPIENT],
        });
        daemon = await startDaemon({
          whitelist,
          listen: { policy: policyAddress },
          extraArgs: [
            '--socketmap-listen',
            socketmapAddress,
            // The default transport value (smtp-mssante:, next hop = the recipient domain, so that
            // smtp_tls_policy_maps is asked for that domain). No DNS in tests, hence no MX lookup:
            // the TLS policy pins the MX certificate name that match=hostname checks in production.
            // Were the policy table not used, the transport's own "secure" (match=nexthop:dot-nexthop,
            // and MX_NAME is not under the recipient domain) would refuse this certificate and
            // nothing would be delivered.
            '--tls-policy-value',
            `secure match=${MX_NAME}`,
          ],
        });
        relay = await startRelay({
          socketmapAddress,
          caFile: ca.certPath,
          clientCert: relayCert,
          localDestinations: { names: ['destinataire.mssante.test', 'autre.destinataire.mssante.test'], port: receiver.port },
        });
      });

      after(async () => {
        await relay?.stop();
        await receiver?.stop();
        await daemon?.stop();
        if (process.env.MSSANTE_KEEP_TMP !== '1' && pkiDir !== undefined) rmSync(pkiDir, { recursive: true, force: true });
      });

      /** Internal client → relay, in clear from mynetworks, as an internal MTA does. */
      function send(to: string): Promise<SendResult> {
        return sendMail({ port: relay.port, from: SENDER, to, tls: false, ehlo: 'interne.op1.mssante.test' });
      }

      function context(run: SendResult): string {
        return `\n--- swaks\n${run.transcript}\n--- relay log (tail)\n${relay.log().split('\n').slice(-30).join('\n')}\n--- receiver log (tail)\n${receiver.log().split('\n').slice(-20).join('\n')}`;
      }

      test('listed recipient domain: routed through smtp-mssante over verified TLS and delivered; the receiver checked the relay certificate', async () => {
        const run = await send(RECIPIENT);
        assert.equal(run.lastCode, 250, `relay did not accept${context(run)}`);
        const message = await receiver.waitForMessage(RECIPIENT, run.testId, DELIVERY_WAIT_MS);
        // Written by the receiving smtpd: TLS, and the relay's client certificate verified by the receiver.
        assert.match(
          message,
          /Client CN "relais\.op1\.mssante\.test", Issuer "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS" \(verified OK\)/,
        );
        // The relay's smtp-mssante client verified the MX certificate (secure level, IGC-Sante CA only).
        assert.match(
          relay.log(),
          new RegExp(
            `postfix/smtp-mssante/smtp\\[\\d+\\]: Verified TLS connection established to destinataire\\.mssante\\.test\\[127\\.0\\.0\\.1\\]:${receiver.port}`,
          ),
        );
        assert.match(
          relay.log(),
          /postfix\/smtp-mssante\/smtp\[\d+\]: \w+: to=<dr\.martin@destinataire\.mssante\.test>, relay=destinataire\.mssante\.test\[127\.0\.0\.1\]:\d+, .*status=sent/,
        );
      });

      for (const outside of ['someone@gmail.com', 'x@autre.destinataire.mssante.test', 'x@mssante.test']) {
        test(`recipient outside the list (${outside}): refused at RCPT with the reason, nothing queued`, async () => {
          const run = await send(outside);
          const rcpt = run.stages.find((s) => s.command === 'RCPT');
          assert.equal(rcpt?.code, 554, `RCPT not refused${context(run)}`);
          assert.equal(rcpt?.enhanced, '5.7.1');
          assert.ok(rcpt?.text.includes(RECIPIENT_DOMAIN_NOT_LISTED.fr), rcpt?.text);
          assert.ok(rcpt?.text.includes(RECIPIENT_DOMAIN_NOT_LISTED.en), rcpt?.text);
          assert.equal(
            run.stages.some((s) => s.command === 'DATA'),
            false,
          );
          assert.deepEqual(relay.queue(), []);
        });
      }

      test('daemon down: the relay defers at RCPT (4xx), never bounces', async () => {
        assert.equal(await daemon.stop(), 0);
        const run = await send(RECIPIENT);
        const rcpt = run.stages.find((s) => s.command === 'RCPT');
        assert.ok(rcpt !== undefined && rcpt.code >= 400 && rcpt.code < 500, `RCPT not deferred${context(run)}`);
        // Postfix's own answer to an access table it cannot read ("451 4.3.5 Server configuration problem").
        assert.match(rcpt.enhanced ?? '', /^4\./);
        assert.deepEqual(relay.queue(), [], 'nothing accepted, so nothing can bounce');
        assert.doesNotMatch(relay.log(), /status=bounced/);
      });
    },
  );
}

test('README "Outbound (sending side)" shows the lines of the deploy files as shipped', () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Outbound (sending side)'));
  assert.ok(section !== undefined, 'README has the section');
  const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
  const shipped = ['main.cf.outbound', 'master.cf.outbound']
    .map((f) => readFileSync(join(POSTFIX_DEPLOY_DIR, f), 'utf8').split('\n'))
    .flat();
  const lines = block.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#') && l.trim() !== '...');
  assert.ok(lines.length >= 10);
  for (const line of lines) assert.ok(shipped.includes(line), `README line not in deploy/postfix: ${JSON.stringify(line)}`);
});
