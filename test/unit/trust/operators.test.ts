import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decide } from '../../../src/trust/decide.js';
import type { CertIdentity, Facts } from '../../../src/trust/facts.js';
import {
  OBSERVE_LOG_INTERVAL_MS,
  OperatorLedger,
  RATE_WINDOW_MS,
  TokenBucket,
  UNLISTED,
  validateExemptions,
  type OperatorRateSettings,
  type OperatorResult,
  type OperatorSink,
} from '../../../src/trust/operators.js';
import { buildIndex } from '../../support/index-builder.js';

const OP1 = 'CN=mx.op1.fr,OU=318310021300028,O=GIP OP1,ST=Haute-Garonne (31),C=FR';
const OP2 = 'CN=smtp.op2.fr,OU=1750048886,O=GIP OP2,ST=Paris (75),C=FR';
const OP3 = 'CN=relay.op3.fr,O=GIP OP3,C=FR';
const index = buildIndex([
  ['op1.mssante.fr', OP1],
  ['op2.mssante.fr', OP2],
  ['op3.mssante.fr', OP3],
]);

const cn = (value: string): CertIdentity => ({ kind: 'cn', cn: value, issuerCn: null, verified: true });
const dn = (value: string): CertIdentity => ({ kind: 'dn', dn: value, issuerCn: null, verified: true });

function facts(cert: CertIdentity, sender: string, stage: Facts['stage'] = 'rcpt'): Facts {
  return { frontend: 'policy', stage, tlsProtocol: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384', cert, sender };
}

const fromOp1 = decide(facts(cn('mx.op1.fr'), 'a@op1.mssante.fr'), index);
const fromOp2 = decide(facts(cn('smtp.op2.fr'), 'b@op2.mssante.fr'), index);
const mismatchOp1 = decide(facts(cn('mx.op1.fr'), 'b@op2.mssante.fr'), index);
const unlisted = decide(facts(cn('mx.evil.fr'), 'e@op1.mssante.fr'), index);
const notDecided = decide(facts(cn('mx.op1.fr'), 'a@op1.mssante.fr', 'helo'), index);

class RecordingSink implements OperatorSink {
  ledger: OperatorLedger | null = null;
  readonly forgotten: string[] = [];
  readonly overRates: Array<[string, number]> = [];
  /** What the metric would export now: `label|result` → count. */
  get counts(): Map<string, number> {
    return new Map([...(this.ledger?.counts() ?? [])].map(([label, result, count]) => [`${label}|${result}`, count]));
  }
  forget(labels: readonly string[]): void {
    this.forgotten.push(...labels);
  }
  overRate(label: string, messages: number): void {
    this.overRates.push([label, messages]);
  }
  get(label: string, result: OperatorResult): number {
    return this.counts.get(`${label}|${result}`) ?? 0;
  }
}

function ledger(settings: Partial<OperatorRateSettings> = {}, messageMemory?: number) {
  let now = 20 * RATE_WINDOW_MS;
  const sink = new RecordingSink();
  const l = new OperatorLedger({ rate: 0, burst: 0, mode: 'enforce', exempt: [], ...settings }, sink, () => now, messageMemory);
  sink.ledger = l;
  l.setList(index);
  return { l, sink, advance: (ms: number) => (now += ms) };
}

describe('decide() exposes the identity it matched', () => {
  it('normalised CN behind Postfix, DN key from a full DN, null when not listed', () => {
    assert.equal(fromOp1.operator, 'mx.op1.fr');
    assert.equal(decide(facts(cn('MX.OP1.FR'), 'a@op1.mssante.fr'), index).operator, 'mx.op1.fr');
    assert.equal(mismatchOp1.reason.id, 'sender_cert_mismatch');
    assert.equal(mismatchOp1.operator, 'mx.op1.fr', 'a refusal after the certificate matched still names it');
    const byDn = decide(
      facts(dn('C=FR,ST=Haute-Garonne (31),O=GIP OP1,OU=318310021300028,CN=mx.op1.fr'), 'a@op1.mssante.fr'),
      index,
    );
    assert.equal(byDn.reason.id, 'ok');
    assert.ok(byDn.operator?.includes('CN=mx.op1.fr'));
    assert.equal(unlisted.operator, null);
    assert.equal(decide(facts(cn('mx.op1.fr'), 'a@op1.mssante.fr'), null).operator, null);
  });
});

describe('TokenBucket', () => {
  it('gives burst at once, then rate per second', () => {
    const b = new TokenBucket(5, 10, 0);
    let taken = 0;
    for (let i = 0; i < 20; i++) if (b.take(0)) taken++;
    assert.equal(taken, 10);
    assert.equal(b.take(100), false, '0.5 token after 100 ms');
    assert.equal(b.take(200), true, '1 token after 200 ms');
    assert.equal(b.take(200), false);
    // A long quiet spell refills to the burst, no more.
    taken = 0;
    for (let i = 0; i < 20; i++) if (b.take(60_000)) taken++;
    assert.equal(taken, 10);
  });
});

describe('OperatorLedger accounting', () => {
  it('counts once per Postfix instance, per request without one, and not at undecided stages', () => {
    const { l, sink } = ledger();
    for (let rcpt = 0; rcpt < 5; rcpt++) assert.equal(l.admit(fromOp1, 'i-1'), false);
    l.admit(fromOp1, 'i-2');
    l.admit(fromOp1, undefined);
    l.admit(fromOp1, undefined);
    l.admit(notDecided, 'i-3');
    l.admit(mismatchOp1, 'i-4');
    l.admit(unlisted, 'i-5');
    l.admit(unlisted, 'i-5');
    assert.equal(sink.get('mx.op1.fr', 'pass'), 4);
    assert.equal(sink.get('mx.op1.fr', 'reject'), 1);
    assert.equal(sink.get(UNLISTED, 'reject'), 1);
    assert.equal(sink.counts.size, 3);
  });

  it('labels a DN-identified certificate by its normalised DN, CN first', () => {
    const { l, sink } = ledger();
    const byDn = decide(facts(dn('C=FR,O=GIP OP3,CN=relay.op3.fr'), 'x@op3.mssante.fr'), index);
    l.admit(byDn, undefined);
    const labels = [...sink.counts.keys()];
    assert.equal(labels.length, 1);
    assert.match(labels[0]!, /^CN=relay\.op3\.fr,O=gip op3,C=fr\|pass$/i);
  });

  it('keeps at most one slot per listed identity plus unlisted, and forgets operators that left the list', () => {
    const { l, sink } = ledger();
    for (let i = 0; i < 1000; i++) {
      l.admit(decide(facts(cn(`mx${i}.evil.fr`), 'e@op1.mssante.fr'), index), `u-${i}`);
      l.admit(i % 2 === 0 ? fromOp1 : fromOp2, `m-${i}`);
    }
    assert.equal(l.slotCount, 3);
    l.setList(buildIndex([['op2.mssante.fr', OP2]]));
    assert.deepEqual(sink.forgotten, ['mx.op1.fr']);
    assert.deepEqual(
      l
        .snapshot()
        .operators.map((o) => o.operator)
        .sort(),
      ['smtp.op2.fr', UNLISTED].sort(),
    );
    // Still listed: its history stays.
    assert.equal(l.snapshot().operators.find((o) => o.operator === 'smtp.op2.fr')?.transactions, 500);
    // A decision taken on the old list is counted as unlisted, never under a departed label.
    l.admit(fromOp1, 'late');
    assert.equal(l.slotCount, 2);
    l.setList(null);
    assert.deepEqual(sink.forgotten, ['mx.op1.fr', 'smtp.op2.fr']);
  });

  it('bounds the per-message memory: an evicted message is counted again', () => {
    const { l, sink } = ledger({}, 2);
    l.admit(fromOp1, 'a');
    l.admit(fromOp1, 'b');
    l.admit(fromOp1, 'c');
    l.admit(fromOp1, 'c');
    l.admit(fromOp1, 'a');
    assert.equal(sink.get('mx.op1.fr', 'pass'), 4);
  });

  it('reports rate and share over the last window', () => {
    const { l, advance } = ledger();
    for (let i = 0; i < 90; i++) l.admit(fromOp1, `a${i}`);
    for (let i = 0; i < 30; i++) l.admit(fromOp2, `b${i}`);
    advance(RATE_WINDOW_MS / 2);
    let snap = l.snapshot();
    assert.equal(snap.mode, 'off');
    assert.equal(snap.operators[0]?.operator, 'mx.op1.fr');
    assert.equal(snap.operators[0]?.share, 0.75);
    assert.equal(snap.operators[0]?.rate, 90 / 60);
    assert.equal(snap.totalRate, 2);
    advance(RATE_WINDOW_MS);
    snap = l.snapshot();
    assert.equal(snap.operators[0]?.rate, (90 * 0.5) / 60, 'the previous window weighs what is left of it');
    advance(2 * RATE_WINDOW_MS);
    snap = l.snapshot();
    assert.equal(snap.totalRate, 0);
    assert.equal(snap.operators[0]?.share, 0);
    assert.equal(snap.operators.find((o) => o.operator === 'mx.op1.fr')?.transactions, 90);
  });
});

describe('OperatorLedger throttle', () => {
  it('enforce: the flood gets its burst, then its rate; the other operator is untouched', () => {
    const { l, sink, advance } = ledger({ rate: 5, burst: 10 });
    let deferred = 0;
    for (let i = 0; i < 500; i++) if (l.admit(fromOp1, `a${i}`)) deferred++;
    assert.equal(deferred, 490);
    for (let i = 0; i < 50; i++) {
      assert.equal(l.admit(fromOp2, `b${i}`), false);
      advance(200);
    }
    // 50 × 200 ms = 10 s at 5/s refilled op1's bucket to its burst (10), not 50.
    let later = 0;
    for (let i = 0; i < 20; i++) if (!l.admit(fromOp1, `c${i}`)) later++;
    assert.equal(later, 10);
    assert.equal(sink.get('mx.op1.fr', 'throttled'), 500);
    assert.equal(sink.get('mx.op1.fr', 'pass'), 20);
    assert.equal(sink.get('smtp.op2.fr', 'pass'), 50);
    assert.equal(l.snapshot().operators.find((o) => o.operator === 'mx.op1.fr')?.throttled, 500);
  });

  it('same verdict for every recipient of a message, decided at its first request', () => {
    const { l, advance } = ledger({ rate: 1, burst: 1 });
    assert.equal(l.admit(fromOp1, 'first'), false);
    assert.equal(l.admit(fromOp1, 'second'), true);
    advance(5000); // tokens are back, the verdict of "second" is not
    for (let rcpt = 0; rcpt < 3; rcpt++) {
      assert.equal(l.admit(fromOp1, 'second'), true);
      assert.equal(l.admit(fromOp1, 'first'), false);
    }
  });

  it('a refusal stays a refusal and takes no token; unlisted mail is never throttled', () => {
    const { l, sink } = ledger({ rate: 1, burst: 1 });
    for (let i = 0; i < 10; i++) assert.equal(l.admit(mismatchOp1, `r${i}`), false);
    for (let i = 0; i < 10; i++) assert.equal(l.admit(unlisted, `u${i}`), false);
    assert.equal(l.admit(fromOp1, 'ok'), false, 'the refusals took no token');
    assert.equal(sink.get('mx.op1.fr', 'reject'), 10);
    assert.equal(sink.get(UNLISTED, 'reject'), 10);
  });

  it('exempt by CN (also its DN identity) or by DN', () => {
    const { l } = ledger({
      rate: 1,
      burst: 1,
      exempt: ['MX.OP1.FR', 'CN=smtp.op2.fr, OU=1750048886, O=GIP OP2, ST=Paris (75), C=FR'],
    });
    const op1ByDn = decide(facts(dn(OP1), 'a@op1.mssante.fr'), index);
    const op2ByDn = decide(facts(dn(OP2), 'b@op2.mssante.fr'), index);
    const op3ByDn = decide(facts(dn(OP3), 'c@op3.mssante.fr'), index);
    for (let i = 0; i < 20; i++) {
      assert.equal(l.admit(fromOp1, undefined), false);
      assert.equal(l.admit(op1ByDn, undefined), false);
      assert.equal(l.admit(op2ByDn, undefined), false);
    }
    assert.equal(l.admit(op3ByDn, undefined), false);
    assert.equal(l.admit(op3ByDn, undefined), true, 'not exempt: throttled');
    // The DN exemption does not extend to the CN identity behind Postfix.
    assert.equal(l.admit(fromOp2, undefined), false);
    assert.equal(l.admit(fromOp2, undefined), true);
    assert.ok(l.snapshot().operators.find((o) => o.operator === 'mx.op1.fr')?.exempt);
    assert.throws(() => validateExemptions(['  ']), /neither a CN nor a DN/);
    assert.throws(() => validateExemptions(['=x']), /neither a CN nor a DN/);
    validateExemptions(['mx.op1.fr', OP2]);
  });

  it('observe: nothing deferred, the excess counted, one log call per interval', () => {
    const { l, sink, advance } = ledger({ rate: 5, burst: 10, mode: 'observe' });
    for (let i = 0; i < 100; i++) assert.equal(l.admit(fromOp1, `a${i}`), false);
    assert.equal(sink.get('mx.op1.fr', 'throttled'), 90);
    assert.equal(sink.get('mx.op1.fr', 'pass'), 10);
    assert.deepEqual(sink.overRates, [['mx.op1.fr', 1]]);
    advance(OBSERVE_LOG_INTERVAL_MS);
    l.admit(fromOp1, 'late-1'); // the bucket has refilled: passes
    for (let i = 0; i < 60; i++) l.admit(fromOp1, `b${i}`);
    assert.equal(sink.overRates.length, 2);
    assert.equal(sink.overRates[1]?.[1], 89 + 1, 'the second line carries every excess message since the first');
    assert.equal(l.snapshot().mode, 'observe');
  });
});
