/**
 * The edge with the operator ledger: the throttle answer goes into the reply, the metric and the trace alike.
 * With the peer ledger: fingerprints are recorded after the answer, and nothing the ledger does changes it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { DecisionService } from '../../src/decision-service.js';
import { createMetrics } from '../../src/observe/metrics.js';
import { DecisionTracer } from '../../src/observe/trace.js';
import type { Facts } from '../../src/trust/facts.js';
import { OperatorLedger } from '../../src/trust/operators.js';
import { MemoryPeerHistory, PeerLedger, type PeerHistoryBackend } from '../../src/trust/peers.js';
import { POLICY_ACTIONS } from '../../src/trust/reasons.js';
import { MILTER_ANSWERS } from '../../src/frontends/milter/frontend.js';
import { buildIndex } from '../support/index-builder.js';

const index = buildIndex([['op1.mssante.fr', 'CN=mx.op1.fr,O=GIP OP1,C=FR']]);
const facts = (sender: string): Facts => ({
  frontend: 'policy',
  stage: 'rcpt',
  tlsProtocol: 'TLSv1.3',
  tlsCipher: 'TLS_AES_256_GCM_SHA384',
  cert: { kind: 'cn', cn: 'mx.op1.fr', issuerCn: null, verified: true },
  sender,
});

function service(mode: 'enforce' | 'observe') {
  const metrics = createMetrics({ defaultMetrics: false });
  const traces: string[] = [];
  const logger = pino({ level: 'info' }, { write: () => undefined });
  const ledger = new OperatorLedger(
    { rate: 1, burst: 2, mode, exempt: [] },
    { forget: (l) => metrics.forgetOperators(l), overRate: () => undefined },
    () => 0,
  );
  ledger.setList(index);
  metrics.readOperatorCounts(() => ledger.counts());
  const svc = new DecisionService({
    currentIndex: () => index,
    policy: { tlsProfile: 'off', trustedIssuerCns: new Set() },
    metrics,
    tracer: new DecisionTracer(logger, null, (line) => traces.push(line)),
    logger,
    operators: ledger,
  });
  const answer = (sender: string, instance: string) =>
    svc.answer(
      'policy',
      facts(sender),
      { stage: 'rcpt', connectionId: 1, instance, sender },
      process.hrtime.bigint(),
      POLICY_ACTIONS,
    );
  return { svc, metrics, traces, answer };
}

describe('DecisionService with the operator ledger', () => {
  it('enforce: the third message gets 451 4.7.1 in the answer, decisions_total and the trace; a refusal stays a refusal; the dry run is untouched', async () => {
    const { svc, metrics, traces, answer } = service('enforce');
    assert.equal(answer('a@op1.mssante.fr', 'm1').reason.id, 'ok');
    assert.equal(answer('a@op1.mssante.fr', 'm2').reason.id, 'ok');
    const third = answer('a@op1.mssante.fr', 'm3');
    assert.equal(third.reason.id, 'operator_rate_limited');
    assert.equal(
      POLICY_ACTIONS[third.reason.id],
      '451 4.7.1 Debit de l operateur emetteur temporairement limite / sending operator temporarily rate limited',
    );
    assert.equal(answer('a@op1.mssante.fr', 'm3').reason.id, 'operator_rate_limited', 'second recipient, same answer');
    assert.equal(answer('a@autre.mssante.fr', 'm4').reason.id, 'sender_domain_not_listed');
    assert.equal(svc.evaluate(facts('a@op1.mssante.fr')).reason.id, 'ok', 'evaluate() neither counts nor throttles');
    assert.ok(traces.at(-3)?.includes('"reason":"operator_rate_limited"'), traces.at(-3));
    const text = await metrics.registry.metrics();
    assert.match(
      text,
      /^mssante_policyd_decisions_total\{frontend="policy",result="tempfail",reason="operator_rate_limited"\} 2$/m,
    );
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.op1\.fr",result="pass"\} 2$/m);
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.op1\.fr",result="throttled"\} 1$/m);
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.op1\.fr",result="reject"\} 1$/m);
  });

  it('observe: the answer stays a pass, the excess is counted', async () => {
    const { metrics, answer } = service('observe');
    for (let i = 0; i < 5; i++) assert.equal(answer('a@op1.mssante.fr', `m${i}`).reason.id, 'ok');
    const text = await metrics.registry.metrics();
    assert.match(text, /^mssante_policyd_operator_transactions_total\{operator="mx\.op1\.fr",result="throttled"\} 3$/m);
    assert.match(
      text,
      /^mssante_policyd_decisions_total\{frontend="policy",result="tempfail",reason="operator_rate_limited"\} 0$/m,
    );
  });
});

describe('DecisionService with the peer ledger', () => {
  const FP = (n: number): string =>
    `sha256:${Array.from({ length: 32 }, () => n.toString(16).padStart(2, '0').toUpperCase()).join(':')}`;

  function peerService(backend: PeerHistoryBackend) {
    const metrics = createMetrics({ defaultMetrics: false });
    const logger = pino({ level: 'info' }, { write: () => undefined });
    const changes: string[] = [];
    const peers = new PeerLedger(backend, {
      changed: (c) => changes.push(c.fingerprint),
      malformed: () => undefined,
      failed: () => undefined,
    });
    peers.setList(index);
    const svc = new DecisionService({
      currentIndex: () => index,
      policy: { tlsProfile: 'off', trustedIssuerCns: new Set() },
      metrics,
      tracer: new DecisionTracer(logger, null, () => undefined),
      logger,
      peers,
    });
    const answer = (sender: string, fingerprint: string | null, cn = 'mx.op1.fr') =>
      svc.answer(
        'policy',
        {
          ...facts(sender),
          cert: { kind: 'cn', cn, issuerCn: null, verified: true },
          certFingerprints: { cert: fingerprint, pubkey: null, malformed: 0 },
        },
        { stage: 'rcpt', connectionId: 1, sender },
        process.hrtime.bigint(),
        POLICY_ACTIONS,
      );
    return { answer, changes };
  }

  it('records the listed identity decide() matched, whatever the answer; a new certificate changes no answer', async () => {
    const memory = new MemoryPeerHistory();
    const { answer, changes } = peerService(memory);
    assert.equal(answer('a@op1.mssante.fr', FP(1)).reason.id, 'ok');
    assert.equal(answer('a@autre.mssante.fr', FP(2)).reason.id, 'sender_domain_not_listed');
    assert.equal(answer('a@op1.mssante.fr', FP(3), 'mx.inconnu.fr').reason.id, 'cert_not_listed');
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      memory.listSync().map((h) => [h.identity, h.fingerprints.length]),
      [['mx.op1.fr', 2]],
      'the unlisted certificate is not recorded',
    );
    assert.deepEqual(changes, [FP(2)]);
  });

  it('a backend that never answers or throws does not hold or change the answer', () => {
    const hanging: PeerHistoryBackend = { record: () => new Promise(() => undefined), list: () => Promise.resolve([]) };
    assert.equal(peerService(hanging).answer('a@op1.mssante.fr', FP(1)).reason.id, 'ok');
    const throwing: PeerHistoryBackend = {
      record: () => {
        throw new Error('boom');
      },
      list: () => Promise.resolve([]),
    };
    assert.equal(peerService(throwing).answer('a@op1.mssante.fr', FP(1)).reason.id, 'ok');
  });
});

describe('DecisionService stays wire-neutral', () => {
  it("traces the calling frontend's own answer: DUNNO for policy, continue or the reply for Milter", () => {
    const { svc, traces } = service('observe');
    const ask = (frontend: 'policy' | 'milter', sender: string, answers: typeof POLICY_ACTIONS): string => {
      svc.answer(
        frontend,
        { ...facts(sender), frontend },
        { stage: 'rcpt', connectionId: 1, sender },
        process.hrtime.bigint(),
        answers,
      );
      return (JSON.parse(traces.at(-1)!) as { action: string }).action;
    };
    assert.equal(ask('policy', 'a@op1.mssante.fr', POLICY_ACTIONS), 'DUNNO');
    assert.equal(ask('milter', 'a@op1.mssante.fr', MILTER_ANSWERS), 'continue');
    const refusal = 'Domaine expediteur absent de la liste blanche MSSante / sender domain not in the MSSante whitelist';
    assert.equal(ask('policy', 'a@autre.mssante.fr', POLICY_ACTIONS), `550 5.7.1 ${refusal}`);
    assert.equal(ask('milter', 'a@autre.mssante.fr', MILTER_ANSWERS), `550 5.7.1 ${refusal}`);
  });
});
