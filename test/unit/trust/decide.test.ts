import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decide, type DecisionPolicy } from '../../../src/trust/decide.js';
import type { CertIdentity, Facts } from '../../../src/trust/facts.js';
import { POLICY_ACTIONS, type ReasonId } from '../../../src/trust/reasons.js';
import { buildIndex } from '../../support/index-builder.js';

const OP1 = 'CN=mx.op1.fr,OU=318310021300028,O=GIP OP1,ST=Haute-Garonne (31),C=FR';
const OP1_OTHER_O = 'CN=mx.op1.fr,OU=318310021300028,O=AUTRE ORGANISME,ST=Haute-Garonne (31),C=FR';
const OP2 = 'CN=smtp.op2.fr,OU=1750048886,O=GIP OP2,ST=Paris (75),C=FR';
const index = buildIndex([
  ['op1.mssante.fr', OP1],
  ['Pharmacie.OP1.mssante.fr', OP1],
  ['op2.mssante.fr', OP2],
  ['parent.mssante.fr', OP2],
  ['shared.mssante.fr', OP1],
  ['shared.mssante.fr', OP2],
  ['hôpital-démo.mssante.fr', OP2],
]);

const cn = (value: string, issuerCn: string | null = 'AC IGC-SANTE ELEMENTAIRE ORGANISATIONS'): CertIdentity => ({
  kind: 'cn',
  cn: value,
  issuerCn,
  verified: true,
});
const dn = (value: string, verified = true): CertIdentity => ({ kind: 'dn', dn: value, issuerCn: null, verified });

function facts(overrides: Partial<Facts>): Facts {
  return {
    frontend: 'policy',
    stage: 'rcpt',
    tlsProtocol: 'TLSv1.2',
    tlsCipher: 'ECDHE-RSA-AES256-GCM-SHA384',
    cert: cn('mx.op1.fr'),
    sender: 'dr.x@op1.mssante.fr',
    ...overrides,
  };
}

const cases: Array<[string, Partial<Facts>, ReasonId]> = [
  ['listed CN + its domain', {}, 'ok'],
  ['CN compared case-insensitively', { cert: cn('MX.OP1.FR') }, 'ok'],
  ['sender domain case-insensitive', { sender: 'Dr.X@OP1.MSSANTE.FR' }, 'ok'],
  ['sub-domain listed explicitly', { sender: 'a@pharmacie.op1.mssante.fr' }, 'ok'],
  ['domain served by two operators, first', { sender: 'a@shared.mssante.fr' }, 'ok'],
  ['domain served by two operators, second', { cert: cn('smtp.op2.fr'), sender: 'a@shared.mssante.fr' }, 'ok'],
  ['IDN sender domain in U-label', { cert: cn('smtp.op2.fr'), sender: 'a@hôpital-démo.mssante.fr' }, 'ok'],
  ['IDN sender domain in A-label', { cert: cn('smtp.op2.fr'), sender: 'a@xn--hpital-dmo-i7a8j.mssante.fr' }, 'ok'],
  ['bounce with listed cert', { sender: '' }, 'ok_bounce'],
  ['bounce with unlisted cert', { sender: '', cert: cn('mx.evil.fr') }, 'cert_not_listed'],
  ['no TLS', { tlsProtocol: null }, 'tls_required'],
  ['no certificate', { cert: null }, 'cert_missing'],
  ['unverified full DN (Exim)', { cert: dn(OP1, false) }, 'cert_missing'],
  ['unlisted CN', { cert: cn('mx.evil.fr') }, 'cert_not_listed'],
  ['CN look-alike with quotes (a raw CN is not DN text)', { cert: cn('"mx.op1.fr"') }, 'cert_not_listed'],
  ['CN look-alike with a DN escape', { cert: cn('mx\\2eop1.fr') }, 'cert_not_listed'],
  ['unlisted domain', { sender: 'a@unknown.mssante.fr' }, 'sender_domain_not_listed'],
  ['child of a listed parent only', { cert: cn('smtp.op2.fr'), sender: 'a@child.parent.mssante.fr' }, 'sender_domain_not_listed'],
  ['parent of a listed sub-domain', { sender: 'a@mssante.fr' }, 'sender_domain_not_listed'],
  ['domain bound to another certificate', { sender: 'a@op2.mssante.fr' }, 'sender_cert_mismatch'],
  ['sender without domain', { sender: 'postmaster' }, 'sender_invalid'],
  ['sender with IP literal', { sender: 'a@[192.0.2.1]' }, 'sender_invalid'],
  ['sender not told', { sender: null }, 'sender_missing'],
  ['full DN listed, same order', { cert: dn(OP1) }, 'ok'],
  [
    'full DN in certificate order with spaces (GnuTLS)',
    { cert: dn('C=FR, ST=Haute-Garonne (31), O=GIP OP1, OU=318310021300028, CN=mx.op1.fr') },
    'ok',
  ],
  [
    'full DN in slash form (OpenSSL/Sendmail)',
    { cert: dn('/C=FR/ST=Haute-Garonne (31)/O=GIP OP1/OU=318310021300028/CN=mx.op1.fr') },
    'ok',
  ],
  ['same CN, other O (full DN)', { cert: dn(OP1_OTHER_O) }, 'cert_not_listed'],
  ['full DN of op1 with op2 domain', { cert: dn(OP1), sender: 'a@op2.mssante.fr' }, 'sender_cert_mismatch'],
  ['garbage DN: no CN to compare', { cert: dn('not a dn') }, 'cert_subject_unusable'],
  [
    'full DN truncated before its CN (Sendmail cuts {cert_subject} near 256 bytes)',
    { cert: dn('/C=FR/ST=Haute-Garonne (31)/O=GIP OP1/OU=318310021300028') },
    'cert_subject_unusable',
  ],
  [
    'full DN cut inside a value, no CN',
    { cert: dn('/C=FR/ST=Haute-Garonne (31)/O=GIP OP1/OU=3183100') },
    'cert_subject_unusable',
  ],
  ['bounce with a DN without CN', { sender: '', cert: dn('C=FR,O=GIP OP1') }, 'cert_subject_unusable'],
  ['empty CN', { cert: cn('  ') }, 'cert_subject_unusable'],
  ['unverified DN without CN is cert_missing first', { cert: dn('/C=FR/O=GIP OP1', false) }, 'cert_missing'],
  ['HELO stage is not decided', { stage: 'helo', cert: null }, 'not_decided_at_this_stage'],
  ['MAIL stage is decided', { stage: 'mail', sender: 'a@op2.mssante.fr' }, 'sender_cert_mismatch'],
  // Fail closed: a check put in smtpd_data_restrictions / smtpd_end_of_data_restrictions decides.
  ['DATA stage is decided: unlisted certificate refused', { stage: 'data', cert: cn('mx.evil.fr') }, 'cert_not_listed'],
  ['DATA stage is decided: no certificate refused', { stage: 'data', cert: null }, 'cert_missing'],
  ['DATA stage is decided: listed certificate passes', { stage: 'data' }, 'ok'],
  ['CONNECT stage is not decided', { stage: 'connect', cert: cn('mx.evil.fr') }, 'not_decided_at_this_stage'],
  ['VRFY stage is not decided', { stage: 'vrfy' }, 'not_decided_at_this_stage'],
  ['ETRN stage is not decided', { stage: 'etrn' }, 'not_decided_at_this_stage'],
  ['unknown stage is not decided', { stage: 'other' }, 'not_decided_at_this_stage'],
];

describe('decide()', () => {
  for (const [name, overrides, expected] of cases) {
    it(`${name} → ${expected}`, () => {
      assert.equal(decide(facts(overrides), index).reason.id, expected);
    });
  }

  it('answers tempfail whatever the certificate when no list is in force', () => {
    for (const cert of [cn('mx.op1.fr'), cn('mx.evil.fr'), null]) {
      const d = decide(facts({ cert }), null);
      assert.equal(d.reason.id, 'whitelist_unavailable');
      assert.match(POLICY_ACTIONS[d.reason.id], /^451 4\.3\.0 /);
    }
  });

  it('refusals carry 550 5.7.1 with French then English text, ASCII only', () => {
    const action = POLICY_ACTIONS[decide(facts({ sender: 'a@unknown.mssante.fr' }), index).reason.id];
    assert.equal(
      action,
      '550 5.7.1 Domaine expediteur absent de la liste blanche MSSante / sender domain not in the MSSante whitelist',
    );
    for (const a of Object.values(POLICY_ACTIONS)) assert.match(a, /^[\x20-\x7e]+$/);
  });

  it('checks the issuer CN when trusted issuers are configured', () => {
    const policy: DecisionPolicy = { tlsProfile: 'off', trustedIssuerCns: new Set(['ac igc-sante elementaire organisations']) };
    assert.equal(decide(facts({}), index, policy).reason.id, 'ok');
    assert.equal(decide(facts({ cert: cn('mx.op1.fr', 'Evil CA') }), index, policy).reason.id, 'cert_issuer_not_trusted');
    assert.equal(decide(facts({ cert: cn('mx.op1.fr', null) }), index, policy).reason.id, 'cert_issuer_not_trusted');
  });

  it('applies a TLS profile only when one is chosen', () => {
    const v17: DecisionPolicy = { tlsProfile: 'ref1-v1.7', trustedIssuerCns: new Set() };
    const v16: DecisionPolicy = { tlsProfile: 'ref1-v1.6', trustedIssuerCns: new Set() };
    const cbc = facts({ tlsCipher: 'ECDHE-RSA-AES256-SHA384' });
    assert.equal(decide(cbc, index).reason.id, 'ok');
    assert.equal(decide(cbc, index, v16).reason.id, 'ok');
    assert.equal(decide(cbc, index, v17).reason.id, 'tls_profile');
    assert.equal(decide(facts({ tlsProtocol: 'TLSv1.1' }), index, v16).reason.id, 'tls_profile');
    assert.equal(decide(facts({ tlsProtocol: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384' }), index, v17).reason.id, 'ok');
    assert.equal(
      decide(facts({ tlsProtocol: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384' }), index, v16).reason.id,
      'tls_profile',
    );
    // Exim names: TLS1.2 and IANA suite names
    assert.equal(
      decide(facts({ tlsProtocol: 'TLS1.2', tlsCipher: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256' }), index, v17).reason.id,
      'ok',
    );
    assert.equal(
      decide(facts({ tlsProtocol: 'TLS1.2', tlsCipher: 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256' }), index, v17).reason.id,
      'tls_profile',
    );
  });

  it('property: no input makes decide() pass a certificate that is not listed', () => {
    const listedCns = new Set(['mx.op1.fr', 'smtp.op2.fr']);
    const arbitraryCert = fc.oneof(
      fc.constant(null),
      fc.record({
        kind: fc.constant('cn' as const),
        cn: fc.string(),
        issuerCn: fc.option(fc.string()),
        verified: fc.constant(true as const),
      }),
      fc.record({
        kind: fc.constant('dn' as const),
        dn: fc.oneof(fc.string(), fc.constantFrom(OP1, OP2, OP1_OTHER_O)),
        issuerCn: fc.option(fc.string()),
        verified: fc.boolean(),
      }),
    );
    fc.assert(
      fc.property(
        arbitraryCert,
        fc.option(fc.oneof(fc.string(), fc.emailAddress(), fc.constantFrom('a@op1.mssante.fr', 'a@op2.mssante.fr', ''))),
        fc.constantFrom<'rcpt' | 'mail' | 'data'>('rcpt', 'mail', 'data'),
        (cert, sender, stage) => {
          const d = decide(facts({ cert, sender, stage }), index);
          if (d.reason.result !== 'pass') return;
          // A pass means: a verified certificate whose identity is listed.
          assert.ok(cert !== null && cert.verified);
          if (cert.kind === 'cn')
            assert.ok(listedCns.has(cert.cn.trim().toLowerCase()), `passed unlisted CN ${JSON.stringify(cert.cn)}`);
          else assert.ok(index.isDnListed(decideKey(cert.dn)), `passed unlisted DN ${JSON.stringify(cert.dn)}`);
        },
      ),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 2000) },
    );
  });
});

import { parseDn } from '../../../src/trust/dn.js';
function decideKey(text: string): string {
  const parsed = parseDn(text);
  return parsed.ok ? parsed.dn.key : '';
}

describe('WhitelistIndex.domainBinding (decide()’s one lookup per sender domain)', () => {
  it('agrees with hasDomain + domainHasDn / domainHasCn for every listed domain and identity', () => {
    const domains = [...index.domains(), 'absent.mssante.fr', 'OP1.mssante.fr', ''];
    const dnKeys = [...new Set(index.entries.map((e) => e.dnKey)), decideKey(OP1_OTHER_O), 'cn=nobody'];
    const cns = [...new Set(index.entries.map((e) => e.cn)), 'nobody.example', ''];
    for (const domain of domains) {
      for (const dnKey of dnKeys) {
        const expected = index.hasDomain(domain) ? index.domainHasDn(domain, dnKey) : null;
        assert.equal(index.domainBinding(domain, dnKey, null), expected, `${domain} / ${dnKey}`);
        // The DN key wins over a CN when both are given, as decide() gives only one.
        assert.equal(index.domainBinding(domain, dnKey, 'nobody.example'), expected, `${domain} / ${dnKey} + cn`);
      }
      for (const cnValue of cns) {
        const expected = index.hasDomain(domain) ? index.domainHasCn(domain, cnValue) : null;
        assert.equal(index.domainBinding(domain, null, cnValue), expected, `${domain} / ${cnValue}`);
      }
    }
  });
});
