import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { factsFromRequest } from '../../../../src/frontends/policy/facts.js';
import { decide } from '../../../../src/trust/decide.js';
import { parseDn } from '../../../../src/trust/dn.js';
import { POLICY_ACTIONS } from '../../../../src/trust/reasons.js';
import { buildIndex } from '../../../support/index-builder.js';

const base: Array<[string, string]> = [
  ['request', 'smtpd_access_policy'],
  ['protocol_state', 'RCPT'],
  ['encryption_protocol', 'TLSv1.2'],
  ['encryption_cipher', 'ECDHE-RSA-AES256-GCM-SHA384'],
  ['sender', 'a@op1.mssante.fr'],
];

describe('policy request → Facts', () => {
  it('takes the xtext-decoded CN of a Postfix-verified certificate', () => {
    const f = factsFromRequest(new Map([...base, ['ccert_subject', 'mx+2Eop1.fr'], ['ccert_issuer', 'AC+20IGC-SANTE']]));
    assert.deepEqual(f.cert, { kind: 'cn', cn: 'mx.op1.fr', issuerCn: 'AC IGC-SANTE', verified: true });
    assert.equal(f.stage, 'rcpt');
    assert.equal(f.tlsProtocol, 'TLSv1.2');
  });

  it('has no certificate when Postfix sends an empty ccert_subject (chain not verified)', () => {
    const f = factsFromRequest(new Map([...base, ['ccert_subject', ''], ['ccert_fingerprint', 'AA:BB']]));
    assert.equal(f.cert, null);
  });

  it("prefers Exim's full DN and its verification flag", () => {
    const verified = factsFromRequest(
      new Map([...base, ['ccert_subject', 'mx.op1.fr'], ['x_ccert_dn', 'C=FR,O=OP1,CN=mx.op1.fr'], ['x_ccert_verified', '1']]),
    );
    assert.deepEqual(verified.cert, { kind: 'dn', dn: 'C=FR,O=OP1,CN=mx.op1.fr', issuerCn: null, verified: true });
    const unverified = factsFromRequest(new Map([...base, ['x_ccert_dn', 'C=FR,CN=mx.op1.fr'], ['x_ccert_verified', '0']]));
    assert.equal(unverified.cert?.verified, false);
  });

  it("takes the issuer CN from Exim's x_ccert_issuer_dn; an issuer DN without a CN gives no issuer", () => {
    const dnFacts = (issuer: string): string | null | undefined =>
      factsFromRequest(
        new Map([...base, ['x_ccert_dn', 'C=FR,O=OP1,CN=mx.op1.fr'], ['x_ccert_verified', '1'], ['x_ccert_issuer_dn', issuer]]),
      ).cert?.issuerCn;
    assert.equal(
      dnFacts('C=FR,O=ASIP-SANTE,OU=0002 187512751,CN=AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'),
      'ac igc-sante elementaire organisations',
    );
    assert.equal(dnFacts('C=FR,O=ASIP-SANTE'), null);
    assert.equal(dnFacts('not a dn'), null);
    // Empty (no certificate): falls back to ccert_issuer, absent here.
    assert.equal(dnFacts(''), null);
  });

  it('leaves OpenSSL \\xHH escapes to the DN parser (an escaped "/" must not forge an RDN)', () => {
    const f = factsFromRequest(
      new Map([...base, ['x_ccert_dn', '/C=FR/ST=Bouches-du-Rh\\xC3\\xB4ne (13)/CN=mx.op1.fr'], ['x_ccert_verified', '1']]),
    );
    assert.equal(f.cert?.kind === 'dn' && f.cert.dn, '/C=FR/ST=Bouches-du-Rh\\xC3\\xB4ne (13)/CN=mx.op1.fr');
    const parsed = parseDn(f.cert?.kind === 'dn' ? f.cert.dn : '');
    const listed = parseDn('CN=mx.op1.fr,ST=Bouches-du-Rhône (13),C=FR');
    assert.ok(parsed.ok && listed.ok && parsed.dn.key === listed.dn.key);
    const forged = parseDn('/C=FR/O=X\\/CN=evil/CN=mx.op1.fr');
    assert.ok(forged.ok && forged.dn.cn === 'mx.op1.fr' && forged.dn.rdns.length === 3);
  });

  it('keeps the null sender apart from a missing one', () => {
    assert.equal(factsFromRequest(new Map([...base.filter(([n]) => n !== 'sender'), ['sender', '']])).sender, '');
    assert.equal(factsFromRequest(new Map(base.filter(([n]) => n !== 'sender'))).sender, null);
  });

  it('maps protocol states; unknown ones are not decided', () => {
    const stage = (s: string): string => factsFromRequest(new Map([['protocol_state', s]])).stage;
    assert.equal(stage('MAIL'), 'mail');
    assert.equal(stage('rcpt'), 'rcpt');
    assert.equal(stage('DATA'), 'data');
    assert.equal(stage('END-OF-MESSAGE'), 'data');
    assert.equal(stage('CONNECT'), 'connect');
    assert.equal(stage('EHLO'), 'helo');
    assert.equal(stage('VRFY'), 'vrfy');
    assert.equal(stage('ETRN'), 'etrn');
    assert.equal(stage('NOSUCH'), 'other');
    assert.equal(factsFromRequest(new Map()).stage, 'other');
    assert.equal(
      factsFromRequest(
        new Map([
          ['protocol_state', 'RCPT'],
          ['encryption_protocol', ''],
        ]),
      ).tlsProtocol,
      null,
    );
  });

  it('decodes xtext the same on every request, whatever values came before', () => {
    const issuerOf = (raw: string): string | null | undefined =>
      factsFromRequest(new Map([...base, ['ccert_subject', 'mx.op1.fr'], ['ccert_issuer', raw]])).cert?.issuerCn;
    for (let round = 0; round < 3; round++) {
      assert.equal(issuerOf('AC+20IGC-SANTE'), 'AC IGC-SANTE');
      // More distinct encoded values than any bound of a memo of decoded values.
      for (let i = 0; i < 150; i++) assert.equal(issuerOf(`AC+20${i}+2B`), `AC ${i}+`);
    }
    assert.equal(issuerOf('AC+zz+2'), 'AC+zz+2');
    assert.equal(issuerOf('plain'), 'plain');
    const cn = factsFromRequest(new Map([...base, ['ccert_subject', 'mx+20Sant+C3+A9']])).cert;
    assert.deepEqual(cn, { kind: 'cn', cn: 'mx Santé', issuerCn: null, verified: true });
  });

  it('gives the DN as sent, xtext and all (only Postfix values are xtext)', () => {
    const dn = `CN=mx.op1.fr,O=A+20B,ST=${'x'.repeat(40)}`;
    const f = factsFromRequest(new Map([...base, ['x_ccert_dn', dn], ['ccert_issuer', 'AC+20X']]));
    assert.deepEqual(f.cert, { kind: 'dn', dn, issuerCn: 'AC X', verified: false });
  });

  it('a verified full DN cut before its CN (an MTA truncating the subject) is decided cert_subject_unusable, with the reply saying so', () => {
    const index = buildIndex([['op1.mssante.fr', 'CN=mx.op1.fr,O=OP1,C=FR']]);
    const request = (dn: string): Map<string, string> => new Map([...base, ['x_ccert_dn', dn], ['x_ccert_verified', '1']]);
    const truncated = decide(factsFromRequest(request('/C=FR/ST=Bouches-du-Rh\\xC3\\xB4ne (13)/O=OP1')), index);
    assert.equal(truncated.reason.id, 'cert_subject_unusable');
    assert.match(
      POLICY_ACTIONS[truncated.reason.id],
      /^550 5\.7\.1 Sujet du certificat client inexploitable .* \/ client certificate subject unusable \(no CN, probably truncated by the MTA\)$/,
    );
    // The whole subject of the same server passes: only the missing CN made it unusable.
    assert.equal(decide(factsFromRequest(request('/C=FR/O=OP1/CN=mx.op1.fr')), index).reason.id, 'ok');
  });
});
