/**
 * The Milter session without sockets: negotiation, which macros are kept and how long, what each
 * command asks of the server, and what the kept state costs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SMFIP, decodePacket, encodeMacro, encodeOptneg, type MilterCommand } from '../../../../src/frontends/milter/codec.js';
import {
  KEPT_MACROS,
  MACRO_ENTRY_COST,
  MilterSession,
  type MilterStep,
  type MilterTransaction,
} from '../../../../src/frontends/milter/session.js';

const ALL_ACTIONS = 0x1ff;
const ALL_PROTOCOL_V6 = 0x1fffff;

const cmd = (c: MilterCommand): MilterCommand => c;
const macro = (stage: string, macros: Array<[string, string]>): MilterCommand =>
  decodePacket(encodeMacro(stage, macros).subarray(4));
const mail = (sender: string): MilterCommand => cmd({ type: 'mail', args: [sender] });

function negotiated(protocol = ALL_PROTOCOL_V6): MilterSession {
  const session = new MilterSession(7);
  const step = session.apply(decodePacket(encodeOptneg(6, ALL_ACTIONS, protocol).subarray(4)));
  assert.equal(step?.type, 'reply');
  return session;
}

function transactionOf(step: MilterStep | null): MilterTransaction {
  assert.ok(step !== null && step.type === 'mail', `a decision request, got ${JSON.stringify(step)}`);
  return step.transaction;
}

describe('milter session (pure)', () => {
  it('refuses every command before OPTNEG, and a version below 2', () => {
    const s = new MilterSession(1);
    assert.deepEqual(s.apply(mail('<a@b.fr>')), {
      type: 'error',
      kind: 'unexpected_command',
      fields: { command: null, type: 'mail' },
    });
    assert.deepEqual(new MilterSession(1).apply(cmd({ type: 'optneg', version: 1, actions: 0, protocol: 0 })), {
      type: 'error',
      kind: 'unsupported_version',
      fields: { command: 'O', version: 1 },
    });
  });

  it('hands MAIL FROM over with CONNECT, HELO and MAIL macros merged, client, HELO and connection id', () => {
    const s = negotiated();
    assert.equal(s.apply(macro('C', [['{tls_version}', 'TLSv1.2']])), null);
    assert.equal(
      s.apply(cmd({ type: 'connect', hostname: 'mx.a.fr', family: 'inet', port: 25, address: '192.0.2.1' })),
      null,
      'NR_CONN',
    );
    assert.equal(
      s.apply(
        macro('H', [
          ['{tls_version}', 'TLSv1.3'],
          ['cert_subject', 'mx.a.fr'],
        ]),
      ),
      null,
    );
    assert.equal(s.apply(cmd({ type: 'helo', name: 'mx.a.fr' })), null, 'NR_HELO');
    s.apply(macro('M', [['i', 'Q1']]));
    const t = transactionOf(s.apply(mail('<a@b.fr>')));
    assert.deepEqual(Object.fromEntries(t.macros), { '{tls_version}': 'TLSv1.3', '{cert_subject}': 'mx.a.fr', i: 'Q1' });
    assert.deepEqual(
      [t.sender, t.clientAddress, t.clientName, t.helo, t.connectionId],
      ['a@b.fr', '192.0.2.1', 'mx.a.fr', 'mx.a.fr', 7],
    );
  });

  it('keeps MAIL macros for one message: dropped at ABORT, end of message and a new HELO; HELO macros stay', () => {
    const s = negotiated();
    s.apply(macro('H', [['{cert_subject}', 'mx.a.fr']]));
    for (const reset of [cmd({ type: 'abort' }), cmd({ type: 'bodyeob', dataBytes: 0 }), cmd({ type: 'helo', name: 'again' })]) {
      s.apply(macro('M', [['i', 'old']]));
      s.apply(reset);
      const t = transactionOf(s.apply(mail('<>')));
      assert.equal(t.macros.get('i'), undefined, `after ${reset.type}`);
      assert.equal(t.macros.get('{cert_subject}'), 'mx.a.fr', `after ${reset.type}`);
    }
  });

  it('starts afresh after QUIT_NC, and ends the connection on it while draining', () => {
    const s = negotiated();
    s.apply(macro('H', [['{cert_subject}', 'mx.a.fr']]));
    s.apply(cmd({ type: 'helo', name: 'h' }));
    assert.equal(s.apply(cmd({ type: 'quit_nc' })), null);
    assert.equal(s.betweenSessions, true);
    assert.equal(s.retainedBytes, 0);
    const t = transactionOf(s.apply(mail('<a@b.fr>')));
    assert.equal(t.macros.size, 0);
    assert.equal(t.helo, null);
    assert.deepEqual(s.apply(cmd({ type: 'quit_nc' }), true), { type: 'end' });
    assert.deepEqual(s.apply(cmd({ type: 'quit' })), { type: 'end' });
  });

  it('answers CONTINUE to the events the MTA sends anyway, unless it negotiated no reply', () => {
    const s = negotiated(0);
    for (const type of ['rcpt', 'header', 'eoh', 'body', 'data', 'unknown', 'bodyeob'] as const) {
      const c = type === 'rcpt' ? cmd({ type, args: ['<x@y.fr>'] }) : cmd({ type, dataBytes: 1 });
      assert.equal(s.apply(c)?.type, 'reply', type);
    }
    assert.equal(s.apply(cmd({ type: 'connect', hostname: '', family: 'unknown', port: null, address: null }))?.type, 'reply');
    assert.equal(
      negotiated(SMFIP.NR_CONN).apply(cmd({ type: 'connect', hostname: '', family: 'unknown', port: null, address: null })),
      null,
    );
  });

  it('drops, and reports, macros of a stage the decision does not read', () => {
    const s = negotiated();
    for (const stage of ['R', 'T', 'E', 'N', 'L', 'B', 'U']) {
      assert.deepEqual(
        s.apply(
          macro(stage, [
            ['i', 'x'],
            ['{cert_subject}', 'forged'],
          ]),
        ),
        { type: 'ignored', kind: 'macro_stage_ignored', stage },
      );
    }
    assert.equal(s.retainedBytes, 0);
    assert.equal(transactionOf(s.apply(mail('<>'))).macros.size, 0);
  });

  it('keeps only the macros it reads: a packet of 10 000 made-up names costs nothing', () => {
    const s = negotiated();
    const junk: Array<[string, string]> = Array.from({ length: 10_000 }, (_, i) => [`x${i}`, 'v']);
    s.apply(macro('C', junk));
    s.apply(macro('H', junk));
    s.apply(macro('M', [...junk, ['i', 'Q1']]));
    assert.equal(s.retainedBytes, 2 * ('i'.length + 'Q1'.length) + MACRO_ENTRY_COST);
    assert.deepEqual([...transactionOf(s.apply(mail('<>'))).macros.keys()], ['i']);
    for (const name of ['{cert_subject}', '{cert_issuer}', '{verify}', '{tls_version}', '{cipher}', 'i'])
      assert.ok(KEPT_MACROS.has(name), name);
  });

  it('charges what it keeps, and a re-sent stage replaces the previous one', () => {
    const s = negotiated();
    const subject = 'x'.repeat(1000);
    s.apply(macro('H', [['{cert_subject}', subject]]));
    const one = 2 * ('{cert_subject}'.length + subject.length) + MACRO_ENTRY_COST;
    assert.equal(s.retainedBytes, one);
    s.apply(
      macro('H', [
        ['{cert_subject}', subject],
        ['{cert_subject}', subject],
      ]),
    );
    assert.equal(s.retainedBytes, one, 'the same name twice is kept once');
    s.apply(cmd({ type: 'helo', name: 'abc' }));
    assert.equal(s.retainedBytes, one + 6);
  });
});
