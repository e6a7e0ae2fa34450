import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { DecisionTracer, jsonString } from '../../../src/observe/trace.js';
import { REASONS } from '../../../src/trust/reasons.js';

/** A tracer whose lines are kept, and its logger at info (the daemon's default level). */
function capture(level = 'info'): {
  tracer: (key?: Buffer | null) => DecisionTracer;
  lines: () => Array<Record<string, unknown>>;
  raw: () => string;
} {
  let text = '';
  const logger = pino({ level });
  return {
    tracer: (key = null) =>
      new DecisionTracer(logger, key, (line) => {
        text += line;
      }),
    raw: () => text,
    lines: () =>
      text
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const context = {
  stage: 'rcpt',
  instance: '1a2b.3c4d',
  queueId: 'ABC123',
  clientAddress: '192.0.2.10',
  clientName: 'mx.op1.fr',
  helo: 'mx.op1.fr',
  certSubject: 'mx.op1.fr',
  certIssuer: 'AC IGC-SANTE',
  certFingerprint: 'AB:CD',
  tlsProtocol: 'TLSv1.3',
  tlsCipher: 'TLS_AES_256_GCM_SHA384',
  sender: 'dr.x@op1.mssante.fr',
  recipient: 'dr.y@op2.mssante.fr',
  size: '12345',
};

describe('DecisionTracer', () => {
  it('records the fields the référentiel asks for, one line per decision', () => {
    const { tracer, lines } = capture();
    tracer().record(
      'policy',
      context,
      { reason: REASONS.sender_cert_mismatch, senderDomain: 'op1.mssante.fr' },
      '550 5.7.1 x',
      0.000321,
    );
    const [line] = lines();
    assert.ok(line);
    for (const [field, value] of Object.entries({
      event: 'decision',
      frontend: 'policy',
      stage: 'rcpt',
      result: 'reject',
      reason: 'sender_cert_mismatch',
      action: '550 5.7.1 x',
      latency_us: 321,
      instance: '1a2b.3c4d',
      queue_id: 'ABC123',
      client_address: '192.0.2.10',
      client_name: 'mx.op1.fr',
      helo: 'mx.op1.fr',
      cert_subject: 'mx.op1.fr',
      cert_issuer: 'AC IGC-SANTE',
      cert_fingerprint: 'AB:CD',
      tls_protocol: 'TLSv1.3',
      sender: 'dr.x@op1.mssante.fr',
      recipient: 'dr.y@op2.mssante.fr',
      size: '12345',
      sender_domain: 'op1.mssante.fr',
    })) {
      assert.equal(line[field], value, field);
    }
    assert.ok(!Number.isNaN(Date.parse(String(line['time']))));
    assert.equal(line['level'], 'info');
    assert.equal(line['service'], 'mssante-policyd');
  });

  it('keeps attacker-controlled CR/LF inside one JSON line', () => {
    const { tracer, raw, lines } = capture();
    tracer().record(
      'policy',
      { ...context, helo: 'evil\r\n{"reason":"ok"}', sender: 'a%s%n\n@x.fr' },
      { reason: REASONS.cert_not_listed, senderDomain: null },
      'x',
      0,
    );
    assert.equal(raw().trim().split('\n').length, 1);
    assert.equal(lines()[0]?.['helo'], 'evil\r\n{"reason":"ok"}');
    assert.equal(lines()[0]?.['reason'], 'cert_not_listed');
  });

  it('pseudonymises addresses with a keyed hash, keeping the domain', () => {
    const { tracer: make, lines } = capture();
    const key = Buffer.alloc(32, 7);
    const tracer = make(key);
    tracer.record('milter', context, { reason: REASONS.ok, senderDomain: 'op1.mssante.fr' }, 'DUNNO', 0);
    const line = lines()[0]!;
    assert.match(String(line['sender']), /^h:[A-Za-z0-9_-]{16}@op1\.mssante\.fr$/);
    assert.match(String(line['recipient']), /^h:[A-Za-z0-9_-]{16}@op2\.mssante\.fr$/);
    assert.match(String(line['client_address']), /^h:/);
    assert.ok(!JSON.stringify(line).includes('dr.x'));
    // Same key, same pseudonym: traces stay joinable.
    assert.equal(tracer.pseudonymizeAddress('dr.x@op1.mssante.fr'), line['sender']);
    assert.notEqual(make(Buffer.alloc(32, 8)).pseudonymizeAddress('dr.x@op1.mssante.fr'), line['sender']);
  });

  it('a refusal names the list in force it was decided with (list_sha256); a pass line does not', () => {
    const { tracer, lines } = capture();
    const t = tracer();
    const sha = 'ab'.repeat(32);
    t.record('policy', context, { reason: REASONS.sender_cert_mismatch, senderDomain: 'op1.mssante.fr' }, '550 5.7.1 x', 0, sha);
    t.record('policy', context, { reason: REASONS.ok, senderDomain: 'op1.mssante.fr' }, 'DUNNO', 0, sha);
    t.record('policy', context, { reason: REASONS.whitelist_unavailable, senderDomain: null }, '451 4.3.0 x', 0, null);
    assert.deepEqual(
      lines().map((l) => [l.result, l.list_sha256]),
      [
        ['reject', sha],
        ['pass', undefined],
        ['tempfail', undefined],
      ],
    );
  });

  it('logs tempfails at warn so they stand out', () => {
    const { tracer, lines } = capture();
    tracer().record('policy', context, { reason: REASONS.whitelist_unavailable, senderDomain: null }, '451 4.3.0 x', 0);
    assert.equal(lines()[0]?.['level'], 'warn');
  });

  it('writes nothing below the configured level', () => {
    const { tracer, raw } = capture('warn');
    tracer().record('policy', context, { reason: REASONS.ok, senderDomain: 'op1.mssante.fr' }, 'DUNNO', 0);
    assert.equal(raw(), '');
  });

  it('writes every field as JSON.stringify would, escapes and all', () => {
    const odd = [
      '',
      '"',
      '\\',
      'a"b\\c',
      '\u0000\u001f\u007f',
      '\r\n',
      '\u2028',
      'é',
      '😀',
      '\ud83d',
      '\ude00x',
      'x\ud83d\ude00',
    ];
    for (const v of odd) assert.equal(jsonString(v), JSON.stringify(v), JSON.stringify(v));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' }), fc.string()), (v) => {
        assert.equal(jsonString(v), JSON.stringify(v));
      }),
      { numRuns: 5000 },
    );
    const { tracer, raw } = capture();
    const sender = 'a"\\b\u0001@op1.mssante.fr';
    tracer().record(
      'policy',
      { ...context, sender, helo: '\ud800' },
      { reason: REASONS.ok, senderDomain: 'op1.mssante.fr' },
      'DUNNO',
      0,
    );
    assert.ok(raw().includes(`,"sender":${JSON.stringify(sender)},`));
    assert.ok(raw().includes(`,"helo":"\\ud800",`));
  });
});
