/**
 * Debian's miltertest (OpenDKIM's MTA-side simulator, an independent implementation) drives the
 * server Sendmail-style: `{verify}` and a full xtext-encoded slash DN at HELO, decision at MAIL.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { factsFromTransaction } from '../../../../src/frontends/milter/frontend.js';
import { certFromMacros } from '../../../../src/frontends/milter/macros.js';
import { startMilterServer, type MilterTransaction, type MilterVerdict } from '../../../../src/frontends/milter/server.js';
import type { ListenerHandle } from '../../../../src/net/stream-server.js';
import { createMetrics } from '../../../../src/observe/metrics.js';
import { decide } from '../../../../src/trust/decide.js';
import { parseDn } from '../../../../src/trust/dn.js';
import { REASONS, replyText, type ReasonId } from '../../../../src/trust/reasons.js';
import { luaString, runMiltertest } from '../../../support/miltertest.js';
import { buildIndex } from '../../../support/index-builder.js';
import { toolOrSkip } from '../../../support/tools.js';
import { LISTENER_DEFAULTS } from '../../../../src/listener-defaults.js';

const LISTED_DN = 'CN=mx.ch-exemple.fr,OU=10000000001,O=CENTRE HOSPITALIER EXEMPLE,ST=Paris (75),C=FR';
/** The same subject as Sendmail hands it over: certificate order, slash form, xtext. */
const SENDMAIL_LISTED = '/C=FR/ST=Paris+20(75)/O=CENTRE+20HOSPITALIER+20EXEMPLE/OU=10000000001/CN=mx.ch-exemple.fr';
/** The listed subject as Sendmail cuts a long {cert_subject} (~256 bytes): the CN, last in certificate order, is gone. */
const SENDMAIL_TRUNCATED = SENDMAIL_LISTED.slice(0, SENDMAIL_LISTED.indexOf('/CN='));
const SENDMAIL_OTHER = '/C=FR/ST=Paris+20(75)/O=AUTRE/OU=10000000002/CN=mx.autre.fr';

const listed = new Set([
  (() => {
    const p = parseDn(LISTED_DN);
    assert.ok(p.ok);
    return p.dn.key;
  })(),
]);

/** A small certificate gate over macros.ts: listed and verified passes, anything else is refused. */
function gate(t: MilterTransaction): MilterVerdict {
  const cert = certFromMacros(t.macros);
  let reason: ReasonId | null = null;
  if (cert.kind !== 'dn' || !cert.verified) reason = 'cert_missing';
  else {
    const parsed = parseDn(cert.subject ?? '');
    if (!parsed.ok || !listed.has(parsed.dn.key)) reason = 'cert_not_listed';
  }
  if (reason === null) return { action: 'continue' };
  const r = REASONS[reason];
  return { action: 'reply', smtpCode: r.smtpCode, text: replyText(r) };
}

function session(
  port: number,
  name: string,
  verify: string | null,
  subject: string,
  sender: string,
  expected: 'SMFIR_CONTINUE' | 'SMFIR_REPLYCODE',
): string {
  return `
do
  local conn = mt.connect("inet:${port}@127.0.0.1")
  if conn == nil then error("${name}: connect failed") end
  if mt.negotiate(conn, nil, nil, nil) ~= nil then error("${name}: negotiate failed") end
  mt.macro(conn, SMFIC_CONNECT, "j", "mx.chu-exemple.fr", "{daemon_name}", "MTA")
  if mt.conninfo(conn, "mx.ch-exemple.fr", "192.0.2.25") ~= nil then error("${name}: conninfo failed") end
  mt.macro(conn, SMFIC_HELO, ${verify === null ? '' : `"{verify}", ${luaString(verify)}, `}"{cert_subject}", ${luaString(subject)},
    "{cert_issuer}", "/C=FR/O=ASIP-SANTE/CN=TEST+20AC+20IGC-SANTE", "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384")
  if mt.helo(conn, "mx.ch-exemple.fr") ~= nil then error("${name}: helo failed") end
  mt.macro(conn, SMFIC_MAIL, "i", ${luaString(name)})
  if mt.mailfrom(conn, ${luaString(sender)}) ~= nil then error("${name}: mailfrom failed") end
  if mt.getreply(conn) ~= ${expected} then error("${name}: expected ${expected}, got " .. tostring(mt.getreply(conn))) end
  mt.echo("${name}: ${expected}")
  mt.disconnect(conn)
end
`;
}

const servers: ListenerHandle[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close(100)));
});

describe('milter server driven by miltertest', () => {
  it('passes a verified listed DN and refuses an unverified or unlisted one, Sendmail-style', async (t) => {
    const miltertest = toolOrSkip(t, 'miltertest');
    if (miltertest === null) return;
    const seen: MilterTransaction[] = [];
    const server = await startMilterServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.milter,
      logger: pino({ level: 'silent' }),
      metrics: createMetrics({ defaultMetrics: false }),
      onMailFrom: (tx) => {
        seen.push(tx);
        return gate(tx);
      },
    });
    servers.push(server);
    const port = Number(server.address.split(':')[1]);
    const script = [
      session(port, 'listed', 'OK', SENDMAIL_LISTED, '<dr.martin@ch-exemple.mssante.fr>', 'SMFIR_CONTINUE'),
      session(port, 'unverified', 'FAIL', SENDMAIL_LISTED, '<dr.martin@ch-exemple.mssante.fr>', 'SMFIR_REPLYCODE'),
      session(port, 'unlisted', 'OK', SENDMAIL_OTHER, '<>', 'SMFIR_REPLYCODE'),
    ].join('\n');
    const result = await runMiltertest(miltertest, script);
    assert.equal(result.status, 0, `miltertest failed:\n${result.stderr}${result.stdout}`);
    assert.match(result.stdout, /listed: SMFIR_CONTINUE/);
    assert.match(result.stdout, /unverified: SMFIR_REPLYCODE/);
    assert.match(result.stdout, /unlisted: SMFIR_REPLYCODE/);

    assert.deepEqual(
      seen.map((tx) => [tx.macros.get('i'), tx.sender, gate(tx).action]),
      [
        ['listed', 'dr.martin@ch-exemple.mssante.fr', 'continue'],
        ['unverified', 'dr.martin@ch-exemple.mssante.fr', 'reply'],
        ['unlisted', '', 'reply'],
      ],
    );
    const first = seen[0]!;
    assert.equal(first.clientAddress, '192.0.2.25');
    assert.equal(first.helo, 'mx.ch-exemple.fr');
    assert.equal(first.macros.get('{tls_version}'), 'TLSv1.3');
    assert.equal(
      certFromMacros(first.macros).subject,
      '/C=FR/ST=Paris (75)/O=CENTRE HOSPITALIER EXEMPLE/OU=10000000001/CN=mx.ch-exemple.fr',
    );
  });

  it('takes a full DN without {verify} as unverified (cert_missing) and a verified DN cut before its CN as cert_subject_unusable, through the real decision; a Postfix CN still passes', async (t) => {
    const miltertest = toolOrSkip(t, 'miltertest');
    if (miltertest === null) return;
    const index = buildIndex([['ch-exemple.mssante.fr', LISTED_DN]]);
    const reasons: string[] = [];
    const server = await startMilterServer('127.0.0.1:0', {
      ...LISTENER_DEFAULTS.milter,
      logger: pino({ level: 'silent' }),
      metrics: createMetrics({ defaultMetrics: false }),
      onMailFrom: (tx) => {
        const reason = decide(factsFromTransaction(tx), index).reason;
        reasons.push(`${tx.macros.get('i') ?? '-'} ${reason.id}`);
        return reason.result === 'pass'
          ? { action: 'continue' }
          : { action: 'reply', smtpCode: reason.smtpCode, text: replyText(reason) };
      },
    });
    servers.push(server);
    const port = Number(server.address.split(':')[1]);
    const sender = '<dr.martin@ch-exemple.mssante.fr>';
    const script = [
      session(port, 'slash-no-verify', null, SENDMAIL_LISTED, sender, 'SMFIR_REPLYCODE'),
      session(port, 'comma-no-verify', null, LISTED_DN, sender, 'SMFIR_REPLYCODE'),
      session(port, 'slash-verified', 'OK', SENDMAIL_LISTED, sender, 'SMFIR_CONTINUE'),
      session(port, 'postfix-cn', null, 'mx.ch-exemple.fr', sender, 'SMFIR_CONTINUE'),
      session(port, 'truncated-verified', 'OK', SENDMAIL_TRUNCATED, sender, 'SMFIR_REPLYCODE'),
    ].join('\n');
    const result = await runMiltertest(miltertest, script);
    assert.equal(result.status, 0, `miltertest failed:\n${result.stderr}${result.stdout}`);
    assert.deepEqual(reasons, [
      'slash-no-verify cert_missing',
      'comma-no-verify cert_missing',
      'slash-verified ok',
      'postfix-cn ok',
      'truncated-verified cert_subject_unusable',
    ]);
  });
});
