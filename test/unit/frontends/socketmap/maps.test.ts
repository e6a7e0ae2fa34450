import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  RECIPIENT_REJECT_VALUE,
  SOCKETMAP_MAPS,
  SocketmapTables,
  parentDomains,
  type SocketmapLookup,
} from '../../../../src/frontends/socketmap/maps.js';
import { createMetrics } from '../../../../src/observe/metrics.js';
import { buildIndex } from '../../../support/index-builder.js';

const DN_A = 'CN=mx.operateur-a.fr,OU=318310021300028,O=OPERATEUR A,ST=Paris (75),C=FR';
const DN_A2 = 'CN=relais.operateur-a.fr,OU=318310021300028,O=OPERATEUR A,ST=Paris (75),C=FR';
const DN_B = 'CN=mx.operateur-b.fr,OU=10000000001,O=OPERATEUR B,ST=Loire (42),C=FR';

/** A listed parent (ch-exemple.fr) and a sub-domain listed on its own (sub.ch-exemple.fr), an IDN, an uppercase Nom. */
const INDEX = buildIndex([
  ['ch-exemple.fr', DN_A],
  ['ch-exemple.fr', DN_A2],
  ['a.b.deep-exemple.fr', DN_B],
  ['sub.ch-exemple.fr', DN_B],
  ['hôpital-exemple.fr', DN_B],
  ['CHU-Exemple.MSSante.fr', DN_A],
]);

const VALUES = { tlsPolicy: 'secure match=hostname:nexthop:dot-nexthop', transport: 'smtp-mssante:' };
const tables = new SocketmapTables(VALUES);
const ask = (map: string, key: string, index = INDEX): string => {
  const { reply } = tables.lookup(map, key, index);
  return reply.status === 'NOTFOUND' ? 'NOTFOUND' : `${reply.status} ${reply.text}`;
};

describe('socketmap tables: domain maps', () => {
  it('mssante-domain answers the distinct CNs of a listed domain, sorted', () => {
    assert.equal(ask('mssante-domain', 'ch-exemple.fr'), 'OK mx.operateur-a.fr,relais.operateur-a.fr');
    assert.equal(ask('mssante-domain', 'sub.ch-exemple.fr'), 'OK mx.operateur-b.fr');
  });

  it('the policy and transport values come from the configuration', () => {
    assert.equal(ask('mssante-tls-policy', 'ch-exemple.fr'), `OK ${VALUES.tlsPolicy}`);
    assert.equal(ask('mssante-transport', 'ch-exemple.fr'), `OK ${VALUES.transport}`);
    const other = new SocketmapTables({ tlsPolicy: 'verify', transport: 'relay:[relais.mssante.test]:25' });
    assert.equal(other.lookup('mssante-tls-policy', 'ch-exemple.fr', INDEX).reply.text, 'verify');
    assert.equal(other.lookup('mssante-transport', 'ch-exemple.fr', INDEX).reply.text, 'relay:[relais.mssante.test]:25');
  });

  for (const map of ['mssante-domain', 'mssante-tls-policy', 'mssante-transport']) {
    it(`${map}: keys compare like the inbound side (case, trailing dot, IDN both ways)`, () => {
      for (const key of [
        'CH-EXEMPLE.FR',
        'ch-exemple.fr.',
        'chu-exemple.mssante.fr',
        'hôpital-exemple.fr',
        'xn--hpital-exemple-0ob.fr',
        'HÔPITAL-exemple.fr.',
      ]) {
        assert.match(ask(map, key), /^OK /, key);
      }
    });

    it(`${map}: exact domains only: no parent, no sub-domain, no parent-style key`, () => {
      for (const key of [
        'deep-exemple.fr',
        'b.deep-exemple.fr',
        'x.a.b.deep-exemple.fr',
        'other.ch-exemple.fr',
        '.ch-exemple.fr',
        '.fr',
        'fr',
        '*',
        '',
        'user@',
        '[192.0.2.1]',
      ]) {
        assert.equal(ask(map, key), 'NOTFOUND', key);
      }
    });

    it(`${map}: a full address is looked up by its domain (transport_maps asks it first)`, () => {
      assert.match(ask(map, 'dr.martin+ext@CH-exemple.fr'), /^OK /);
      assert.equal(ask(map, 'dr.martin@other.ch-exemple.fr'), 'NOTFOUND');
    });
  }

  it('the IDN is stored in A-label form', () => {
    assert.equal(INDEX.hasDomain('xn--hpital-exemple-0ob.fr'), true);
  });
});

describe('socketmap tables: mssante-recipient-access', () => {
  const REJECT = `OK ${RECIPIENT_REJECT_VALUE}`;

  it('the refusal carries the contract text', () => {
    assert.equal(
      RECIPIENT_REJECT_VALUE,
      'REJECT 5.7.1 Domaine destinataire hors espace de confiance MSSante / recipient domain outside the MSSante trust space',
    );
  });

  it('the full address decides: listed domain passes, anything else is refused', () => {
    assert.equal(ask('mssante-recipient-access', 'dr.martin@ch-exemple.fr'), 'NOTFOUND');
    assert.equal(ask('mssante-recipient-access', 'DR.Martin+tag@SUB.ch-exemple.fr.'), 'NOTFOUND');
    assert.equal(ask('mssante-recipient-access', 'x@xn--hpital-exemple-0ob.fr'), 'NOTFOUND');
    assert.equal(ask('mssante-recipient-access', 'x@hôpital-exemple.fr'), 'NOTFOUND');
    for (const key of [
      'x@other.ch-exemple.fr',
      'x@deep-exemple.fr',
      'x@b.deep-exemple.fr',
      'x@gmail.com',
      'x@[192.0.2.1]',
      'x@localhost',
      'postmaster',
      '*',
    ]) {
      assert.equal(ask('mssante-recipient-access', key), REJECT, key);
    }
  });

  it('a bare domain neither listed nor a parent of a listed domain is refused; a parent is not', () => {
    assert.equal(ask('mssante-recipient-access', 'gmail.com'), REJECT);
    assert.equal(ask('mssante-recipient-access', 'other.ch-exemple.fr'), REJECT);
    for (const key of ['ch-exemple.fr', 'b.deep-exemple.fr', 'deep-exemple.fr', 'fr', 'FR.', '.deep-exemple.fr', '.fr']) {
      assert.equal(ask('mssante-recipient-access', key), 'NOTFOUND', key);
    }
  });

  it('`user@` (asked last) never refuses', () => {
    assert.equal(ask('mssante-recipient-access', 'dr.martin@'), 'NOTFOUND');
  });

  /**
   * Postfix's check_recipient_access (smtpd_check.c check_mail_access/check_domain_access): the
   * address with extension, without it, the domain and each parent (bare with the default
   * parent_domain_matches_subdomains, `.parent` without smtpd_access_maps in it), then `user@`;
   * the first key found wins.
   */
  function postfixAccess(address: string, parentStyle: 'bare' | 'dot'): string {
    const at = address.lastIndexOf('@');
    const local = address.slice(0, at);
    const domain = address.slice(at + 1);
    const keys = [address];
    const plus = local.indexOf('+');
    if (plus > 0) keys.push(`${local.slice(0, plus)}@${domain}`);
    keys.push(domain);
    for (let dot = domain.indexOf('.'); dot !== -1; dot = domain.indexOf('.', dot + 1)) {
      keys.push(parentStyle === 'bare' ? domain.slice(dot + 1) : domain.slice(dot));
    }
    keys.push(`${plus > 0 ? local.slice(0, plus) : local}@`);
    for (const key of keys) {
      const { reply } = tables.lookup('mssante-recipient-access', key, INDEX);
      if (reply.status !== 'NOTFOUND') return `${reply.status} ${reply.text}`;
    }
    return 'pass';
  }

  it("through Postfix's whole key sequence: exactly listed domains pass, every other recipient is refused", () => {
    const listed = [
      'ch-exemple.fr',
      'sub.ch-exemple.fr',
      'a.b.deep-exemple.fr',
      'hôpital-exemple.fr',
      'xn--hpital-exemple-0ob.fr',
      'chu-exemple.mssante.fr',
    ];
    const unlisted = [
      'other.ch-exemple.fr',
      'x.sub.ch-exemple.fr',
      'b.deep-exemple.fr',
      'deep-exemple.fr',
      'x.a.b.deep-exemple.fr',
      'mssante.fr',
      'fr',
      'gmail.com',
    ];
    for (const style of ['bare', 'dot'] as const) {
      for (const d of listed) assert.equal(postfixAccess(`dr.martin+ext@${d}`, style), 'pass', `${d} (${style})`);
      for (const d of unlisted) assert.equal(postfixAccess(`dr.martin@${d}`, style), REJECT, `${d} (${style})`);
    }
  });

  it('random domains: a recipient passes iff its domain is exactly listed', () => {
    const label = fc.constantFrom('a', 'b', 'ch-exemple', 'deep-exemple', 'sub', 'fr', 'x', 'mssante', 'chu-exemple');
    fc.assert(
      fc.property(fc.array(label, { minLength: 1, maxLength: 5 }), fc.constantFrom('bare', 'dot'), (labels, style) => {
        const domain = labels.join('.');
        const expected = INDEX.hasDomain(domain) ? 'pass' : REJECT;
        assert.equal(postfixAccess(`u@${domain}`, style), expected, domain);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('socketmap tables: errors and no list', () => {
  it('an unknown map is PERM, with a bounded metric label', () => {
    const r: SocketmapLookup = tables.lookup('mssante-nope', 'ch-exemple.fr', INDEX);
    assert.equal(r.reply.status, 'PERM');
    assert.equal(r.map, 'unknown');
    assert.equal(r.result, 'perm');
  });

  it('every map answers TEMP while no list is in force, so Postfix defers and never bounces', () => {
    for (const map of ['mssante-domain', 'mssante-tls-policy', 'mssante-transport', 'mssante-recipient-access']) {
      const r = tables.lookup(map, 'x@ch-exemple.fr', null);
      assert.equal(r.reply.status, 'TEMP', map);
      assert.match(r.reply.text, /^4\.3\.0 /);
      assert.equal(r.result, 'temp');
      assert.equal(r.map, map);
    }
  });

  it('labels OK, NOTFOUND results for metrics', () => {
    assert.deepEqual(
      [
        tables.lookup('mssante-domain', 'ch-exemple.fr', INDEX).result,
        tables.lookup('mssante-domain', 'gmail.com', INDEX).result,
      ],
      ['ok', 'notfound'],
    );
  });

  it('refuses an empty or multi-line configured value', () => {
    assert.throws(() => new SocketmapTables({ tlsPolicy: '', transport: 'smtp:' }), RangeError);
    assert.throws(() => new SocketmapTables({ tlsPolicy: 'secure', transport: 'smtp:\n' }), RangeError);
  });

  it('metrics pre-create a series for every map (and unknown) and every result, at 0', async () => {
    const json = await createMetrics({ defaultMetrics: false }).registry.getMetricsAsJSON();
    const series = json.find((m) => m.name === 'mssante_policyd_socketmap_lookups_total')?.values ?? [];
    const maps = new Set(series.map((v) => String(v.labels.map)));
    assert.deepEqual([...maps].sort(), [...SOCKETMAP_MAPS, 'unknown'].sort());
    assert.equal(series.length, maps.size * 4);
    assert.ok(series.every((v) => v.value === 0));
  });

  it('parentDomains lists every proper suffix, down to the top-level label', () => {
    assert.deepEqual([...parentDomains(['a.b.c.fr', 'x.fr'])].sort(), ['b.c.fr', 'c.fr', 'fr']);
  });
});
