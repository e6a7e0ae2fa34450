/**
 * Two MX of one operator's fleet, for real: two private Postfix instances (deploy/postfix/main.cf.policy),
 * each with check_policy_service to its own daemon, both daemons sharing one private redis-server
 * (--store) with the per-operator throttle on. Operator A floods both MX at once, presenting its real
 * TLS client certificate; A's excess is deferred (451 4.7.1) on both MX as one bucket — what passes is
 * about one burst, not two — while operator B's mail passes through either MX (swaks).
 *
 * No timing assertion: the bound on what passes counts the refill over the time the flood really took
 * (RATE is the smallest the setting allows; the burst is large beside what one second refills), and
 * every wait is a generous deadline.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { test } from 'node:test';
import { REASONS } from '../../../src/trust/reasons.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { httpGet, waitFor } from '../../support/faults.js';
import { makePki, postfixE2eMissing, writeOperatorList } from '../../support/postfix-scenarios.js';
import { startPostfix, type PostfixInstance } from '../../support/postfix.js';
import { startRedis } from '../../support/redis.js';
import { sendMessages, type MessageOutcome } from '../../support/smtp-session.js';
import { sendMail, type SendResult } from '../../support/swaks.js';

const RECIPIENT = 'dr.martin@destinataire.mssante.test';
const A_CN = 'mx.op1.mssante.test';
const B_CN = 'mx.op2.mssante.test';
const RATE = 1;
const BURST = 60;
/** Per MX: the flood is 2 × PER_MX messages, well over one burst and over two. */
const PER_MX = 90;

const missing = postfixE2eMissing();

async function operatorCounts(daemon: DaemonHandle): Promise<Map<string, number>> {
  const text = (await httpGet(daemon, '/metrics')).text;
  const counts = new Map<string, number>();
  for (const m of text.matchAll(/^mssante_policyd_operator_transactions_total\{operator="([^"]*)",result="([^"]*)"\} (\d+)$/gm))
    counts.set(`${m[1]}|${m[2]}`, Number(m[3]));
  return counts;
}

function assertThrottled(outcome: MessageOutcome): void {
  for (const r of outcome.rcpt) {
    assert.equal(r.code, 451, r.text);
    assert.equal(r.enhanced, '4.7.1', r.text);
    assert.ok(r.text.includes(REASONS.operator_rate_limited.en), r.text);
  }
}

test(
  'two Postfix MX, two daemons, one store: a flood split across both MX is deferred as one bucket; another operator passes through either',
  { skip: missing !== null && process.env.CI !== 'true' ? missing : false, timeout: 600_000 },
  async (t) => {
    if (missing !== null) throw new Error(`CI=true and ${missing}`);
    const redis = await startRedis(t);
    if (redis === null) return;
    const p = makePki();
    const whitelist = writeOperatorList(p);
    const args = [
      '--store',
      redis.url,
      '--store-timeout',
      '2000',
      '--operator-rate',
      String(RATE),
      '--operator-burst',
      String(BURST),
      '--log-level',
      'warn',
    ];
    const daemons: DaemonHandle[] = [];
    const mx: PostfixInstance[] = [];
    t.after(async () => {
      await Promise.allSettled(mx.map((m) => m.stop()));
      await Promise.allSettled(daemons.map((d) => d.stop()));
      if (process.env.MSSANTE_KEEP_TMP !== '1') {
        for (const dir of [p.dir, ...daemons.map((d) => d.stateDir)]) rmSync(dir, { recursive: true, force: true });
      }
    });
    for (let i = 0; i < 2; i++) daemons.push(await startDaemon({ whitelist, extraArgs: args }));
    for (const d of daemons)
      mx.push(
        await startPostfix({
          variant: 'policy',
          serviceAddress: d.policyAddress,
          caFile: p.ca.certPath,
          serverCert: p.server,
          recipients: [RECIPIENT],
        }),
      );
    await waitFor('both instances in /v1/fleet', async () => {
      const fleet = JSON.parse((await httpGet(daemons[0]!, '/v1/fleet')).text) as { instances: unknown[] };
      return fleet.instances.length === 2;
    });

    // A floods both MX at once, one SMTP session after another on each (its real certificate, STARTTLS).
    const started = Date.now();
    const [one, two] = await Promise.all(
      mx.map((m) => sendMessages(m.port, p.op1, 'alerte@op1.mssante.test', [RECIPIENT], PER_MX)),
    );
    const seconds = (Date.now() - started) / 1000;
    const all = [...one!, ...two!];
    const accepted = all.filter((o) => o.outcome === 'accepted').length;
    const deferred = all.filter((o) => o.outcome === 'deferred');
    const perMx = [one!, two!].map((o) => `${o.filter((x) => x.outcome === 'accepted').length} accepted`);
    t.diagnostic(
      `flood of ${all.length} through 2 MX in ${seconds.toFixed(1)} s: ${accepted} accepted (${perMx.join(', ')}), ${deferred.length} deferred; burst ${BURST}, ${RATE}/s`,
    );
    assert.equal(all.filter((o) => o.outcome === 'refused').length, 0, 'nothing refused');
    for (const o of deferred) assertThrottled(o);
    // One bucket: the burst, plus the refill over the flood's real duration, plus one message per MX in flight.
    const oneBucket = BURST + Math.ceil(seconds * RATE) + 2;
    assert.ok(accepted >= BURST - 2, `the burst passes: ${accepted}`);
    assert.ok(
      accepted <= oneBucket,
      `${accepted} accepted in ${seconds.toFixed(1)} s: more than one bucket allows (${oneBucket}); two buckets would accept ${2 * BURST}+`,
    );
    for (const [i, o] of [one!, two!].entries())
      assert.ok(
        o.some((x) => x.outcome === 'deferred'),
        `MX${i + 1} deferred nothing`,
      );

    // The daemons counted what the clients met, between them.
    const counts = await Promise.all(daemons.map(operatorCounts));
    const sum = (key: string): number => counts.reduce((n, c) => n + (c.get(key) ?? 0), 0);
    assert.equal(sum(`${A_CN}|pass`), accepted);
    assert.equal(sum(`${A_CN}|throttled`), deferred.length);

    // B, through either MX, with swaks: accepted and delivered, while A's bucket is drained.
    const viaSwaks: SendResult[] = [];
    for (const m of mx)
      viaSwaks.push(
        await sendMail({ port: m.port, from: 'secretariat@op2.mssante.test', to: RECIPIENT, tls: true, cert: p.op2 }),
      );
    for (const [i, r] of viaSwaks.entries()) {
      assert.equal(r.lastCode, 250, `B through MX${i + 1}:\n${r.transcript}`);
      await mx[i]!.waitForMessage(RECIPIENT, r.testId, 60_000);
    }
    assert.equal(sum(`${B_CN}|throttled`), 0);

    // A again through each MX with swaks: the bucket holds only what refilled since; a deferral is the throttle's answer.
    for (const m of mx) {
      const probe = await sendMail({ port: m.port, from: 'alerte@op1.mssante.test', to: RECIPIENT, tls: true, cert: p.op1 });
      assert.ok(probe.lastCode === 250 || probe.lastCode === 451, probe.transcript);
      if (probe.lastCode === 451) assert.equal(probe.enhanced, '4.7.1', probe.transcript);
    }
  },
);
