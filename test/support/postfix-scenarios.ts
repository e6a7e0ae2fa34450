/**
 * The scenarios both Postfix end-to-end files run: a private Postfix 3.x instance whose MSSante
 * lines are the deploy file itself (main.cf.policy or main.cf.milter), the real daemon, and swaks
 * as the sending MTA with certificates of an IGC-Sante-like test CA. Each scenario asserts what
 * the SMTP client saw, and for accepted mail that Postfix really delivered it into the maildir.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { REASONS, type ReasonId } from '../../src/trust/reasons.js';
import { startDaemon, type DaemonHandle } from './daemon.js';
import { operatorSubject, TestPki, type Issued } from './pki.js';
import { postfixMissing, startPostfix, type PostfixInstance, type PostfixVariant } from './postfix.js';
import { sendMail, type SendOptions, type SendResult } from './swaks.js';
import { buildListXml } from './xmlsec.js';

const RECIPIENT = 'dr.martin@destinataire.mssante.test';

interface Expectations {
  readonly title: string;
  /** The SMTP command a trust-rule refusal answers: the policy service is asked at RCPT TO, the Milter decides at MAIL FROM. */
  readonly refusalStage: 'RCPT' | 'MAIL';
  /** The first 4xx a client gets while the daemon is down. */
  readonly deferral: { readonly stage: string; readonly code: number; readonly enhanced: string; readonly text: RegExp };
}

const EXPECT: Readonly<Record<PostfixVariant, Expectations>> = {
  policy: {
    title: 'Postfix + check_policy_service (deploy/postfix/main.cf.policy) + mssante-policyd',
    refusalStage: 'RCPT',
    // default_action of check_policy_service in main.cf.policy.
    deferral: {
      stage: 'RCPT',
      code: 451,
      enhanced: '4.3.5',
      text: /Service de politique MSSante indisponible \/ MSSante policy service unavailable/,
    },
  },
  milter: {
    title: 'Postfix + smtpd_milters (deploy/postfix/main.cf.milter) + mssante-policyd',
    refusalStage: 'MAIL',
    // default_action=tempfail: smtpd defers the whole session from the first command it refuses
    // (STARTTLS, as the connect-time Milter failure blocks every command after EHLO).
    deferral: { stage: 'STARTTLS', code: 454, enhanced: '4.3.0', text: /Try again later/ },
  },
};

/** Why the Postfix end-to-end tests cannot run here, or null. */
export function postfixE2eMissing(): string | null {
  const postfix = postfixMissing();
  if (postfix !== null) return postfix;
  if (spawnSync('swaks', ['--version'], { stdio: 'ignore' }).status !== 0)
    return 'swaks is not installed (apt-get install swaks)';
  return null;
}

export interface Pki {
  readonly ca: Issued;
  readonly server: Issued;
  readonly op1: Issued;
  readonly op2: Issued;
  /** Issued by the test CA but in no list entry. */
  readonly op3: Issued;
  /** op1's exact subject, issued by a CA Postfix does not trust. */
  readonly rogue: Issued;
  readonly dir: string;
}

export function makePki(): Pki {
  const pki = new TestPki();
  const ca = pki.createCa('igc-sante-test', [
    ['C', 'FR'],
    ['O', 'ASIP-SANTE'],
    ['OU', 'IGC-SANTE TEST'],
    ['CN', 'TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'],
  ]);
  const rogueCa = pki.createCa('rogue-ca', [
    ['C', 'FR'],
    ['O', 'PAS IGC-SANTE'],
    ['CN', 'AC PAS IGC-SANTE'],
  ]);
  const server = pki.issue('mx-destinataire', operatorSubject('mx.destinataire.mssante.test', 'DESTINATAIRE'), ca, {
    usage: 'tls',
    dnsNames: ['mx.destinataire.mssante.test'],
  });
  const op1Subject = operatorSubject('mx.op1.mssante.test', 'OPERATEUR UN', '318310021300001');
  return {
    ca,
    server,
    op1: pki.issue('op1', op1Subject, ca, { usage: 'tls' }),
    op2: pki.issue('op2', operatorSubject('mx.op2.mssante.test', 'OPERATEUR DEUX', '318310021300002', 'Rhone (69)'), ca, {
      usage: 'tls',
    }),
    op3: pki.issue('op3', operatorSubject('mx.op3.mssante.test', 'OPERATEUR TROIS', '318310021300003'), ca, { usage: 'tls' }),
    rogue: pki.issue('rogue', op1Subject, rogueCa, { usage: 'tls' }),
    dir: pki.dir,
  };
}

/**
 * Registers the suite. Skipped with the reason when Postfix (or root) or swaks is missing; under
 * CI=true a missing prerequisite is a failing test instead.
 */
/**
 * The list of the test operators, generated an hour ago: op1 and op2 with their certificates' DNs,
 * then `more` entries. Written as whitelist.xml in the PKI's folder; returns its path.
 */
export function writeOperatorList(p: Pki, more: ReadonlyArray<{ nom: string; dn: string }> = []): string {
  const whitelist = join(p.dir, 'whitelist.xml');
  const generatedAt = new Date(Date.now() - 3_600_000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const entries = [
    { nom: 'op1.mssante.test', dn: p.op1.subjectRfc2253 },
    { nom: 'op2.mssante.test', dn: p.op2.subjectRfc2253 },
    ...more,
  ];
  writeFileSync(whitelist, buildListXml(entries, generatedAt));
  return whitelist;
}

export function describePostfixScenarios(variant: PostfixVariant, options: { readonly unixSocketInChroot?: boolean } = {}): void {
  const expect =
    options.unixSocketInChroot === true
      ? { ...EXPECT[variant], title: `${EXPECT[variant].title}, over unix:private/mssante-policyd (chrooted smtpd)` }
      : EXPECT[variant];
  // The socket in smtpd's chroot (queue_directory/private/), reachable by group postfix.
  const chrootSocket = (pf: PostfixInstance): string => `unix:${join(pf.queueDir, 'private', 'mssante-policyd')}`;
  const daemonArgs = options.unixSocketInChroot === true ? ['--socket-group', 'postfix'] : [];
  const missing = postfixE2eMissing();
  if (missing !== null && process.env.CI === 'true') {
    test(`${expect.title}: prerequisites`, () => {
      throw new Error(`CI=true and ${missing}`);
    });
    return;
  }

  describe(expect.title, { skip: missing ?? false }, () => {
    let p: Pki;
    let whitelist: string;
    let daemon: DaemonHandle;
    let postfix: PostfixInstance;

    const serviceAddress = (d: DaemonHandle): string => {
      const address = variant === 'policy' ? d.policyAddress : d.milterAddress;
      assert.ok(address !== null, 'the daemon has no Milter listener');
      return address;
    };

    before(async () => {
      p = makePki();
      whitelist = writeOperatorList(p, [
        { nom: 'sub.op1.mssante.test', dn: p.op1.subjectRfc2253 },
        { nom: 'parent.mssante.test', dn: p.op2.subjectRfc2253 },
      ]);
      if (options.unixSocketInChroot === true) {
        // Postfix first: the daemon's socket goes into the queue directory Postfix creates.
        postfix = await startPostfix({
          variant,
          serviceAddress: 'unix:private/mssante-policyd',
          caFile: p.ca.certPath,
          serverCert: p.server,
          recipients: [RECIPIENT],
        });
        const listen = variant === 'policy' ? { policy: chrootSocket(postfix) } : { milter: chrootSocket(postfix) };
        daemon = await startDaemon({ whitelist, milter: variant === 'milter', listen, extraArgs: daemonArgs });
      } else {
        daemon = await startDaemon({ whitelist, milter: variant === 'milter' });
        postfix = await startPostfix({
          variant,
          serviceAddress: serviceAddress(daemon),
          caFile: p.ca.certPath,
          serverCert: p.server,
          recipients: [RECIPIENT],
        });
      }
    });

    after(async () => {
      await postfix?.stop();
      await daemon?.stop();
      if (process.env.MSSANTE_KEEP_TMP !== '1') {
        for (const dir of [p?.dir, daemon?.stateDir]) if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
      }
    });

    function send(options: Omit<SendOptions, 'port' | 'to' | 'tls'> & { tls?: boolean }): Promise<SendResult> {
      return sendMail({ port: postfix.port, to: RECIPIENT, tls: true, ...options });
    }

    function context(run: SendResult): string {
      const pf = postfix.log().split('\n').slice(-25).join('\n');
      return `\n--- swaks (exit ${run.exitCode})\n${run.transcript}\n--- postfix log (tail)\n${pf}\n--- daemon log (tail)\n${daemon.logs.slice(-10).join('\n')}`;
    }

    async function assertDelivered(run: SendResult): Promise<string> {
      assert.equal(run.exitCode, 0, `swaks failed${context(run)}`);
      assert.equal(run.stages.find((s) => s.command === '.')?.code, 250, `end of data not accepted${context(run)}`);
      assert.equal(run.lastCode, 250);
      const message = await postfix.waitForMessage(RECIPIENT, run.testId);
      assert.match(message, new RegExp(`X-Mssante-Test-Id: ${run.testId}`));
      return message;
    }

    /** 550 5.7.1 with the reason in French and English at the variant's stage; nothing queued or delivered. */
    function assertRefused(run: SendResult, reason: ReasonId): void {
      const stage = run.stages.find((s) => s.command === expect.refusalStage);
      assert.equal(stage?.code, 550, `${expect.refusalStage} not refused with 550${context(run)}`);
      assert.equal(run.lastCode, 550);
      assert.equal(run.enhanced, '5.7.1');
      assert.ok(run.lastText.includes(REASONS[reason].fr), `no French reason "${REASONS[reason].fr}" in: ${run.lastText}`);
      assert.ok(run.lastText.includes(REASONS[reason].en), `no English reason "${REASONS[reason].en}" in: ${run.lastText}`);
      assert.equal(
        run.stages.some((s) => s.command === 'DATA'),
        false,
        'DATA was sent after a refusal',
      );
      assert.notEqual(run.exitCode, 0);
      assertNowhere(run);
    }

    function assertNowhere(run: SendResult): void {
      assert.deepEqual(postfix.queue(), [], 'Postfix queued a refused message');
      assert.equal(
        postfix.messages(RECIPIENT).some((m) => m.includes(run.testId)),
        false,
        'a refused message was delivered',
      );
    }

    test('listed certificate, its listed domain: 250 and delivered, the certificate verified by Postfix', async () => {
      const message = await assertDelivered(await send({ from: 'alice@op1.mssante.test', cert: p.op1 }));
      // smtpd_tls_received_header: the CN Postfix verified against the CA, as the daemon was told.
      assert.match(
        message,
        /Client CN "mx\.op1\.mssante\.test", Issuer "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS" \(verified OK\)/,
      );
    });

    test('explicitly listed sub-domain of the same operator: delivered', async () => {
      await assertDelivered(await send({ from: 'bob@sub.op1.mssante.test', cert: p.op1 }));
    });

    test('second operator (other CN) with its own domain: delivered', async () => {
      await assertDelivered(await send({ from: 'carol@op2.mssante.test', cert: p.op2 }));
    });

    test('MAIL FROM:<> with a listed certificate: delivered', async () => {
      const run = await send({ from: '', cert: p.op1 });
      assert.ok(run.transcript.includes('MAIL FROM:<>'), run.transcript);
      await assertDelivered(run);
    });

    test('certificate of the trusted CA but not in the list: 550 5.7.1 cert_not_listed', async () => {
      assertRefused(await send({ from: 'dave@op1.mssante.test', cert: p.op3 }), 'cert_not_listed');
    });

    test('MAIL FROM:<> with an unlisted certificate: 550 5.7.1 cert_not_listed', async () => {
      assertRefused(await send({ from: '', cert: p.op3 }), 'cert_not_listed');
    });

    test('listed certificate, sender domain in no entry: 550 5.7.1 sender_domain_not_listed', async () => {
      assertRefused(await send({ from: 'erin@inconnu.mssante.test', cert: p.op1 }), 'sender_domain_not_listed');
    });

    test("op1's certificate with op2's domain: 550 5.7.1 sender_cert_mismatch", async () => {
      assertRefused(await send({ from: 'frank@op2.mssante.test', cert: p.op1 }), 'sender_cert_mismatch');
    });

    test('sub-domain whose parent only is listed: 550 5.7.1 sender_domain_not_listed', async () => {
      assertRefused(await send({ from: 'grace@child.parent.mssante.test', cert: p.op2 }), 'sender_domain_not_listed');
    });

    test('TLS without a client certificate: 550 5.7.1 cert_missing (not a TLS failure)', async () => {
      const run = await send({ from: 'heidi@op1.mssante.test' });
      assert.notEqual(run.tlsSession, null, `TLS was not established${context(run)}`);
      assertRefused(run, 'cert_missing');
    });

    test('listed subject from a CA Postfix does not trust: 550 5.7.1 cert_missing', async () => {
      const run = await send({ from: 'ivan@op1.mssante.test', cert: p.rogue });
      assert.notEqual(run.tlsSession, null, `TLS was not established${context(run)}`);
      assertRefused(run, 'cert_missing');
    });

    test('no STARTTLS: Postfix itself refuses the transaction (530 5.7.0)', async () => {
      const run = await send({ from: 'judy@op1.mssante.test', tls: false });
      assert.equal(run.lastCode, 530, context(run));
      assert.equal(run.enhanced, '5.7.0');
      assertNowhere(run);
    });

    test('TLS 1.2 with an AES-GCM suite of the profile: delivered', async () => {
      const run = await send({
        from: 'ken@op1.mssante.test',
        cert: p.op1,
        tlsProtocol: 'tlsv1_2',
        tlsCipher: 'ECDHE-RSA-AES256-GCM-SHA384',
      });
      assert.match(run.tlsSession ?? '', /^TLSv1\.2:ECDHE-RSA-AES256-GCM-SHA384:/, context(run));
      await assertDelivered(run);
    });

    test('TLS 1.2 with a CBC suite outside the profile: no TLS session, no mail', async () => {
      const run = await send({
        from: 'leo@op1.mssante.test',
        cert: p.op1,
        tlsProtocol: 'tlsv1_2',
        tlsCipher: 'ECDHE-RSA-AES128-SHA256',
      });
      assert.equal(run.tlsSession, null, context(run));
      assert.notEqual(run.exitCode, 0);
      assert.equal(
        run.stages.some((s) => s.command === 'MAIL'),
        false,
        context(run),
      );
      assertNowhere(run);
    });

    test('the refusals above were decided by the daemon, counted under their reason ids', async () => {
      const text = await (await fetch(`http://${daemon.httpAddress}/metrics`)).text();
      for (const reason of ['cert_not_listed', 'sender_domain_not_listed', 'sender_cert_mismatch', 'cert_missing']) {
        const line = new RegExp(
          `^mssante_policyd_decisions_total\\{(?=[^}]*frontend="${variant}")(?=[^}]*result="reject")(?=[^}]*reason="${reason}")[^}]*\\} ([0-9.]+)$`,
          'm',
        ).exec(text);
        assert.ok(line !== null && Number(line[1]) >= 1, `no ${variant} rejection counted for ${reason}`);
      }
    });

    test('daemon stopped: a 4xx, nothing queued; the same mail goes through once it is back', async () => {
      assert.equal(await daemon.stop(), 0, daemon.logs.slice(-10).join('\n'));
      const deferred = await send({ from: 'mallory@op1.mssante.test', cert: p.op1 });
      const first = deferred.stages.find((s) => s.code >= 400);
      assert.equal(first?.command, expect.deferral.stage, context(deferred));
      assert.equal(first?.code, expect.deferral.code, context(deferred));
      assert.equal(first?.enhanced, expect.deferral.enhanced);
      assert.match(first?.text ?? '', expect.deferral.text);
      assert.equal(
        deferred.stages.some((s) => s.code >= 500),
        false,
        context(deferred),
      );
      // A 4xx leaves the message with the sending MTA, which retries: nothing is lost on this side.
      assert.notEqual(deferred.exitCode, 0);
      assertNowhere(deferred);

      const listen = variant === 'policy' ? { policy: daemon.policyAddress } : { milter: serviceAddress(daemon) };
      daemon = await startDaemon({
        whitelist,
        stateDir: daemon.stateDir,
        milter: variant === 'milter',
        listen,
        extraArgs: daemonArgs,
      });
      await assertDelivered(await send({ from: 'mallory@op1.mssante.test', cert: p.op1 }));
    });
  });
}
