import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { certFromMacros, certIdentityFromMacros, tlsFromMacros } from '../../../../src/frontends/milter/macros.js';
import { parseDn } from '../../../../src/trust/dn.js';

const m = (entries: Record<string, string>): ReadonlyMap<string, string> => new Map(Object.entries(entries));

function dnKey(text: string): string {
  const parsed = parseDn(text);
  assert.ok(parsed.ok, `parses: ${text}`);
  return parsed.dn.key;
}

/** Sendmail: X509_NAME_oneline, then xtext (space, '+', '\' and non-ASCII as +XX). */
const SENDMAIL_SUBJECT = '/C=FR/ST=Paris+20(75)/O=CENTRE+20HOSPITALIER+20EXEMPLE/OU=10000000001/CN=mx.ch-exemple.fr';
const LIST_DN = 'CN=mx.ch-exemple.fr,OU=10000000001,O=CENTRE HOSPITALIER EXEMPLE,ST=Paris (75),C=FR';

describe('milter certificate macros', () => {
  it('Postfix: {cert_subject} is the CN of a verified chain', () => {
    assert.deepEqual(
      certFromMacros(m({ '{cert_subject}': 'mx.ch-exemple.fr', '{cert_issuer}': 'TEST AC IGC-SANTE ÉLÉMENTAIRE ORGANISATIONS' })),
      {
        kind: 'cn',
        subject: 'mx.ch-exemple.fr',
        issuer: 'TEST AC IGC-SANTE ÉLÉMENTAIRE ORGANISATIONS',
        verified: true,
      },
    );
  });

  it('Postfix: no {cert_subject} means no verified certificate', () => {
    for (const macros of [m({}), m({ '{cert_subject}': '' }), m({ '{cert_issuer}': 'X', '{tls_version}': 'TLSv1.3' })]) {
      assert.deepEqual(certFromMacros(macros), { kind: 'none', subject: null, issuer: null, verified: false });
      assert.equal(certIdentityFromMacros(macros), null);
    }
  });

  it('Sendmail: a full slash-form DN, xtext-decoded, verified only when {verify} is OK', () => {
    const ok = certFromMacros(
      m({ '{verify}': 'OK', '{cert_subject}': SENDMAIL_SUBJECT, '{cert_issuer}': '/C=FR/O=ASIP-SANTE/CN=TEST+20AC+20IGC-SANTE' }),
    );
    assert.equal(ok.kind, 'dn');
    assert.equal(ok.verified, true);
    assert.equal(ok.subject, '/C=FR/ST=Paris (75)/O=CENTRE HOSPITALIER EXEMPLE/OU=10000000001/CN=mx.ch-exemple.fr');
    assert.equal(ok.issuer, '/C=FR/O=ASIP-SANTE/CN=TEST AC IGC-SANTE');
    assert.equal(dnKey(ok.subject), dnKey(LIST_DN), 'the same subject as the list writes it');
    for (const verify of ['FAIL', 'NO', 'NONE', 'TEMP', 'ok', '']) {
      const view = certFromMacros(m({ '{verify}': verify, '{cert_subject}': SENDMAIL_SUBJECT }));
      assert.equal(view.kind, 'dn');
      assert.equal(view.verified, false, `{verify}=${verify}`);
    }
  });

  it('Sendmail: OpenSSL \\xHH escapes under xtext decode to the UTF-8 value', () => {
    // "Hôpital": OpenSSL writes \xC3\xB4, Sendmail's xtext turns the backslashes into +5C.
    const view = certFromMacros(
      m({ '{verify}': 'OK', '{cert_subject}': '/C=FR/O=H+5CxC3+5CxB4pital+20Nord/CN=mx.hopital-nord.fr' }),
    );
    assert.equal(view.subject, '/C=FR/O=H\\xC3\\xB4pital Nord/CN=mx.hopital-nord.fr');
    assert.equal(dnKey(view.subject), dnKey('CN=mx.hopital-nord.fr,O=Hôpital Nord,C=FR'));
  });

  it('Sendmail: an escaped / inside a value cannot pass for an RDN', () => {
    const view = certFromMacros(m({ '{verify}': 'OK', '{cert_subject}': '/C=FR/O=X+5C/CN=evil.example/CN=mx.x.fr' }));
    const parsed = parseDn(view.subject!);
    assert.ok(parsed.ok);
    assert.equal(parsed.dn.cn, 'mx.x.fr');
    assert.deepEqual(
      parsed.dn.rdns.map((r) => r.map((a) => a.type)),
      [['C'], ['O'], ['CN']],
    );
  });

  it('a full DN without {verify} (Sendmail not asked for it) is unverified, in slash, comma, OID or xtext form', () => {
    const forms = [
      SENDMAIL_SUBJECT,
      LIST_DN,
      ' /CN=mx.ch-exemple.fr/O=X',
      'cn = mx.ch-exemple.fr, o=X',
      '2.5.4.3=mx.ch-exemple.fr,O=X',
      '/C+3DFR/CN+3Dmx.ch-exemple.fr',
    ];
    for (const subject of forms) {
      const view = certFromMacros(m({ '{cert_subject}': subject, '{cert_issuer}': '/C=FR/O=ASIP-SANTE/CN=TEST+20AC' }));
      assert.equal(view.kind, 'dn', subject);
      assert.equal(view.verified, false, subject);
      assert.equal(certIdentityFromMacros(m({ '{cert_subject}': subject }))?.verified, false, subject);
    }
    assert.equal(
      certFromMacros(m({ '{cert_subject}': SENDMAIL_SUBJECT })).subject,
      '/C=FR/ST=Paris (75)/O=CENTRE HOSPITALIER EXEMPLE/OU=10000000001/CN=mx.ch-exemple.fr',
    );
    // Postfix CNs, including odd ones, stay verified CNs.
    for (const cn of ['mx.ch-exemple.fr', 'smtp-1.op2.fr', 'MX SERVEUR 1', 'x.fr/other', 'mx.a.fr,b']) {
      assert.deepEqual(
        certFromMacros(m({ '{cert_subject}': cn })),
        { kind: 'cn', subject: cn, issuer: null, verified: true },
        cn,
      );
    }
  });

  it('Sendmail: {verify} without a subject is no certificate', () => {
    assert.deepEqual(certFromMacros(m({ '{verify}': 'NONE' })), { kind: 'none', subject: null, issuer: null, verified: false });
  });

  it('maps to the Facts certificate identity', () => {
    assert.deepEqual(certIdentityFromMacros(m({ '{cert_subject}': 'mx.x.fr', '{cert_issuer}': 'TEST AC' })), {
      kind: 'cn',
      cn: 'mx.x.fr',
      issuerCn: 'TEST AC',
      verified: true,
    });
    const dn = certIdentityFromMacros(
      m({ '{verify}': 'OK', '{cert_subject}': SENDMAIL_SUBJECT, '{cert_issuer}': '/C=FR/O=ASIP-SANTE/CN=TEST+20AC+20IGC-SANTE' }),
    );
    assert.ok(dn !== null && dn.kind === 'dn');
    assert.equal(dnKey(dn.dn), dnKey(LIST_DN));
    assert.equal(dn.verified, true);
    assert.ok(dn.issuerCn !== null && /^test ac igc-sante$/i.test(dn.issuerCn), `issuer CN, got ${dn.issuerCn}`);
    const unverified = certIdentityFromMacros(m({ '{verify}': 'FAIL', '{cert_subject}': SENDMAIL_SUBJECT }));
    assert.deepEqual(unverified && { verified: unverified.verified, issuerCn: unverified.issuerCn }, {
      verified: false,
      issuerCn: null,
    });
  });
});

describe('milter TLS macros', () => {
  it('reads {tls_version} and {cipher}', () => {
    assert.deepEqual(
      tlsFromMacros(m({ '{tls_version}': 'TLSv1.2', '{cipher}': 'ECDHE-RSA-AES256-GCM-SHA384', '{cipher_bits}': '256' })),
      {
        protocol: 'TLSv1.2',
        cipher: 'ECDHE-RSA-AES256-GCM-SHA384',
      },
    );
  });

  it('reports no TLS when the macros are absent or empty', () => {
    assert.deepEqual(tlsFromMacros(m({})), { protocol: null, cipher: null });
    assert.deepEqual(tlsFromMacros(m({ '{tls_version}': '', '{cipher}': '' })), { protocol: null, cipher: null });
  });
});
