/** GET /v1/operators and the operator series of /metrics, from a real OperatorLedger on a fake clock. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startHttpServer, type HttpDeps } from '../../../src/http/server.js';
import { createMetrics } from '../../../src/observe/metrics.js';
import { decide } from '../../../src/trust/decide.js';
import type { Facts } from '../../../src/trust/facts.js';
import { OperatorLedger, type OperatorsSnapshot } from '../../../src/trust/operators.js';
import { buildIndex } from '../../support/index-builder.js';

const A = 'CN=mx.flood.fr,O=GIP FLOOD,C=FR';
const B = 'CN=mx.calm.fr,O=GIP CALM,C=FR';
const index = buildIndex([
  ['flood.mssante.fr', A],
  ['calm.mssante.fr', B],
]);

function facts(cn: string, sender: string): Facts {
  return {
    frontend: 'policy',
    stage: 'rcpt',
    tlsProtocol: 'TLSv1.3',
    tlsCipher: 'TLS_AES_256_GCM_SHA384',
    cert: { kind: 'cn', cn, issuerCn: null, verified: true },
    sender,
  };
}

describe('GET /v1/operators', () => {
  let now = 100 * 60_000;
  const metrics = createMetrics({ defaultMetrics: false });
  const ledger = new OperatorLedger(
    { rate: 5, burst: 10, mode: 'enforce', exempt: [] },
    { forget: (l) => metrics.forgetOperators(l), overRate: () => undefined },
    () => now,
  );
  ledger.setList(index);
  metrics.readOperatorCounts(() => ledger.counts());
  const deps: HttpDeps = {
    metrics,
    logger: pino({ level: 'silent' }),
    readiness: () => ({ ready: true, reasons: [] }),
    whitelistStatus: () => {
      throw new Error('not used');
    },
    lookupDomain: () => null,
    dryRun: () => {
      throw new Error('not used');
    },
    operators: () => ledger.snapshot(),
  };
  let server: Awaited<ReturnType<typeof startHttpServer>>;
  before(async () => {
    server = await startHttpServer('127.0.0.1:0', deps);
  });
  after(async () => {
    await server.close();
  });

  it('shows each operator rate, share and throttled count, busiest first', async () => {
    const flood = decide(facts('mx.flood.fr', 'a@flood.mssante.fr'), index);
    const calm = decide(facts('mx.calm.fr', 'b@calm.mssante.fr'), index);
    const refused = decide(facts('mx.unknown.fr', 'b@calm.mssante.fr'), index);
    for (let i = 0; i < 90; i++) ledger.admit(flood, `a${i}`);
    for (let i = 0; i < 10; i++) ledger.admit(calm, `b${i}`);
    for (let i = 0; i < 20; i++) ledger.admit(refused, `u${i}`);
    now += 30_000;
    const res = await fetch(`http://${server.address}/v1/operators`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as OperatorsSnapshot;
    assert.equal(body.mode, 'enforce');
    assert.equal(body.rate, 5);
    assert.equal(body.burst, 10);
    assert.equal(body.windowSeconds, 60);
    assert.deepEqual(
      body.operators.map((o) => o.operator),
      ['mx.flood.fr', 'unlisted', 'mx.calm.fr'],
    );
    const [a, u, b] = body.operators;
    assert.equal(a?.transactions, 90);
    assert.equal(a?.throttled, 80);
    assert.ok(Math.abs((a?.share ?? 0) - 0.75) < 1e-9);
    assert.equal(a?.rate, 1.5);
    assert.equal(b?.throttled, 0);
    assert.equal(u?.throttled, 0);
    assert.ok(Math.abs(body.totalRate - 2) < 1e-9);
  });

  it('/metrics carries operator_transactions_total, and drops an operator that left the list', async () => {
    let text = await (await fetch(`http://${server.address}/metrics`)).text();
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.flood\.fr",result="throttled"\} 80$/m);
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.flood\.fr",result="pass"\} 10$/m);
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.calm\.fr",result="pass"\} 10$/m);
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="unlisted",result="reject"\} 20$/m);
    ledger.setList(buildIndex([['calm.mssante.fr', B]]));
    text = await (await fetch(`http://${server.address}/metrics`)).text();
    assert.doesNotMatch(text, /mx\.flood\.fr/);
    assert.match(text, /operator="mx\.calm\.fr"/);
    const body = (await (await fetch(`http://${server.address}/v1/operators`)).json()) as OperatorsSnapshot;
    assert.deepEqual(body.operators.map((o) => o.operator).sort(), ['mx.calm.fr', 'unlisted']);
  });
});
