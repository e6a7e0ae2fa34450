import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import type { Decisions } from '../../../../src/frontends/decisions.js';
import { encodeRequest } from '../../../../src/frontends/policy/codec.js';
import { POLICY_FRONTEND, policyDryRun } from '../../../../src/frontends/policy/frontend.js';
import { startFrontend } from '../../../../src/frontends/spec.js';
import type { ListenerHandle } from '../../../../src/net/stream-server.js';
import { createMetrics } from '../../../../src/observe/metrics.js';
import type { Decision } from '../../../../src/trust/decide.js';
import type { Facts } from '../../../../src/trust/facts.js';
import { POLICY_ACTIONS, REASONS } from '../../../../src/trust/reasons.js';

const frontends: ListenerHandle[] = [];
after(async () => {
  await Promise.all(frontends.map((f) => f.close(100)));
});

/** One request on a fresh connection; resolves with the reply line (`action=...`). */
async function ask(address: string, attrs: Array<[string, string]>): Promise<string> {
  const [host, port] = address.split(':') as [string, string];
  const socket = net.connect(Number(port), host);
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  socket.write(encodeRequest(attrs));
  await new Promise<void>((resolve, reject) => {
    socket.on('data', () => {
      if (text.endsWith('\n\n')) resolve();
    });
    socket.on('error', reject);
    socket.on('close', () => resolve());
  });
  socket.destroy();
  return text.trim();
}

describe('policy frontend', () => {
  it('maps a request to Facts, asks the decision service once, answers its action and counts misplaced stages', async () => {
    const asked: Array<{ frontend: string; facts: Facts; connectionId: number | undefined }> = [];
    const service: Decisions = {
      answer(frontend, facts, context) {
        asked.push({ frontend, facts, connectionId: context.connectionId });
        const decided = facts.stage === 'rcpt' ? REASONS.sender_domain_not_listed : REASONS.not_decided_at_this_stage;
        return { reason: decided, senderDomain: null };
      },
    };
    const metrics = createMetrics({ defaultMetrics: false });
    const frontend = await startFrontend(
      POLICY_FRONTEND,
      '127.0.0.1:0',
      {
        limits: { maxLineBytes: 4096, maxRequestBytes: 16_384, maxAttributes: 100 },
        texts: {},
        idleTimeoutMs: 60_000,
        requestTimeoutMs: 60_000,
        maxConnectionBytes: 131_072,
      },
      { maxConnections: 10, heapWatermarkPercent: 99 },
      { service, currentIndex: () => null, logger: pino({ level: 'silent' }), metrics },
    );
    frontends.push(frontend);
    const rcpt = await ask(frontend.address, [
      ['request', 'smtpd_access_policy'],
      ['protocol_state', 'RCPT'],
      ['sender', 'a@op1.mssante.fr'],
      ['ccert_subject', 'mx.op1.fr'],
    ]);
    assert.equal(rcpt, `action=${POLICY_ACTIONS.sender_domain_not_listed}`);
    const connect = await ask(frontend.address, [
      ['request', 'smtpd_access_policy'],
      ['protocol_state', 'CONNECT'],
    ]);
    assert.equal(connect, `action=${POLICY_ACTIONS.not_decided_at_this_stage}`);
    assert.deepEqual(
      asked.map((a) => [a.frontend, a.facts.stage, a.facts.sender]),
      [
        ['policy', 'rcpt', 'a@op1.mssante.fr'],
        ['policy', 'connect', null],
      ],
    );
    assert.ok(asked.every((a) => typeof a.connectionId === 'number'));
    const text = await metrics.registry.metrics();
    assert.match(text, /^mssante_policyd_misplaced_checks_total\{stage="connect"\} 1$/m);
    assert.match(text, /^mssante_policyd_misplaced_checks_total\{stage="helo"\} 0$/m);
  });

  it('the dry run reads attributes at RCPT unless protocol_state says otherwise, through the same mapping', () => {
    const seen: Facts[] = [];
    const evaluate = (facts: Facts): Decision => {
      seen.push(facts);
      return { reason: facts.stage === 'rcpt' ? REASONS.cert_missing : REASONS.not_decided_at_this_stage, senderDomain: null };
    };
    assert.deepEqual(policyDryRun(evaluate, { sender: 'a@op1.mssante.fr', ignored: 3 }), {
      result: REASONS.cert_missing.result,
      reason: 'cert_missing',
      action: POLICY_ACTIONS.cert_missing,
    });
    assert.equal(
      policyDryRun(evaluate, { sender: 'a@op1.mssante.fr', protocol_state: 'EHLO' }).reason,
      'not_decided_at_this_stage',
    );
    assert.deepEqual(
      seen.map((f) => [f.stage, f.sender]),
      [
        ['rcpt', 'a@op1.mssante.fr'],
        ['helo', 'a@op1.mssante.fr'],
      ],
    );
  });
});
