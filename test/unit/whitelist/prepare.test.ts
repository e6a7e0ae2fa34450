import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../../src/config.js';
import { prepareList } from '../../../src/whitelist/prepare.js';
import { loadSignerTrust } from '../../../src/whitelist/signature.js';
import { buildListXml } from '../../support/xmlsec.js';

const trust = loadSignerTrust([DEMO_SIGNER]);
const demo = readFileSync(DEMO_WHITELIST);
const DN = 'CN=mx.op1.fr,OU=318310021300028,O=GIP OP1,ST=Paris (75),C=FR';

describe('prepareList', () => {
  it('verifies, parses and validates the demo list', () => {
    const r = prepareList(demo, { trust, allowUnsigned: false, maxEntries: 100 });
    assert.ok(r.ok);
    assert.equal(r.list.signature.verified, true);
    assert.equal(r.list.entries.length, 3);
    assert.equal(r.list.rejected.length, 1);
    assert.match(r.list.sha256, /^[0-9a-f]{64}$/);
  });

  it('refuses an unsigned list unless allowed, and a signed one whose signature fails even then', () => {
    const unsigned = Buffer.from(buildListXml([{ nom: 'op1.mssante.fr', dn: DN }], '2026-01-01T00:00:00Z'));
    const refused = prepareList(unsigned, { trust, allowUnsigned: false, maxEntries: 100 });
    assert.equal(!refused.ok && refused.reason, 'signature_missing');
    const allowed = prepareList(unsigned, { trust: null, allowUnsigned: true, maxEntries: 100 });
    assert.ok(allowed.ok && !allowed.list.signature.verified);
    const tampered = Buffer.from(demo.toString('utf8').replace('demo-clinique', 'demo-cliniqe'));
    const stillChecked = prepareList(tampered, { trust, allowUnsigned: true, maxEntries: 100 });
    assert.equal(!stillChecked.ok && stillChecked.reason, 'signature_digest_mismatch');
  });

  it('enforces the entry limit and refuses invalid UTF-8, a bad date and a list with no valid entry', () => {
    const two = Buffer.from(
      buildListXml(
        [
          { nom: 'a.mssante.fr', dn: DN },
          { nom: 'b.mssante.fr', dn: DN },
        ],
        '2026-01-01T00:00:00Z',
      ),
    );
    const tooMany = prepareList(two, { trust: null, allowUnsigned: true, maxEntries: 1 });
    assert.equal(!tooMany.ok && tooMany.reason, 'list_too_many_entries');
    const latin1 = Buffer.concat([two.subarray(0, 200), Buffer.from([0xe9]), two.subarray(200)]);
    assert.equal(
      ((r) => !r.ok && r.reason)(prepareList(latin1, { trust: null, allowUnsigned: true, maxEntries: 10 })),
      'encoding_invalid',
    );
    const badDate = Buffer.from(buildListXml([{ nom: 'a.mssante.fr', dn: DN }], '28/02/2025'));
    assert.equal(
      ((r) => !r.ok && r.reason)(prepareList(badDate, { trust: null, allowUnsigned: true, maxEntries: 10 })),
      'generation_date_invalid',
    );
    const junk = Buffer.from(buildListXml([{ nom: '_', dn: '_' }], '2026-01-01T00:00:00Z'));
    assert.equal(
      ((r) => !r.ok && r.reason)(prepareList(junk, { trust: null, allowUnsigned: true, maxEntries: 10 })),
      'list_empty',
    );
  });

  it('refuses a DOCTYPE the byte scan cannot see (UTF-16), and a list whose bytes say another encoding', () => {
    const xml = buildListXml([{ nom: 'op1.mssante.fr', dn: DN }], '2026-01-01T00:00:00Z');
    const bomb = xml.replace('?>', '?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>').replace('op1', '&b;');
    for (const unsigned of [true, false]) {
      const options = { trust: unsigned ? null : trust, allowUnsigned: unsigned, maxEntries: 100 };
      // UTF-16: "<\0!\0D\0..." is valid UTF-8 (NULs) and no "<!DOCTYPE" for the scan; libxml2 reads
      // it as UTF-8 whatever it declares, and refuses the NULs.
      const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(bomb.replace('UTF-8', 'UTF-16'), 'utf16le')]);
      const r16 = prepareList(utf16, options);
      assert.equal(r16.ok, false);
      assert.ok(!r16.ok && ['xml_malformed', 'encoding_invalid'].includes(r16.reason), !r16.ok ? r16.reason : '');
      // Declared ISO-8859-1 but UTF-8 bytes: read as UTF-8, the DOCTYPE scan sees it.
      const latin = prepareList(Buffer.from(bomb.replace('UTF-8', 'ISO-8859-1')), options);
      assert.equal(!latin.ok && latin.reason, 'doctype_forbidden');
      const lower = prepareList(Buffer.from(bomb.replace('<!DOCTYPE', '<!doctype')), options);
      assert.equal(!lower.ok && lower.reason, 'doctype_forbidden');
    }
  });
});
