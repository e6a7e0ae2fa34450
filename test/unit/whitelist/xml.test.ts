import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { declaresDoctype } from '../../../src/whitelist/list-bytes.js';
import { parseListXml } from '../../../src/whitelist/xml.js';
import { realListOrSkip } from '../../support/fixtures.js';
import { buildListXml } from '../../support/xmlsec.js';

const DN = 'CN=mx.op1.fr,OU=318310021300028,O=GIP OP1,ST=Paris (75),C=FR';

describe('parseListXml', () => {
  it('reads the real ANS list: 6 494 entries, trimmed fields, generation date', (t) => {
    const real = realListOrSkip(t);
    if (real === null) return;
    const result = parseListXml(readFileSync(real.list, 'utf8'));
    assert.ok(result.ok);
    assert.equal(result.list.entries.length, 6494);
    assert.equal(result.list.generatedAt, '2025-02-28T15:42:07Z');
    const first = result.list.entries[0];
    assert.equal(first?.nom, '1001-services.mssante.fr');
    assert.equal(first?.dn, 'CN=medimail-asip.mipih.fr,OU=318310021300028,O=GIP MIPIH,ST=Haute-Garonne (31),C=FR');
    assert.equal(first?.dateMaj, '2024-06-07T10:24:42Z');
  });

  it('refuses a DOCTYPE (entity expansion) before parsing', () => {
    const bomb =
      '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><ListeBlancheMSSante><ListeDomaines/></ListeBlancheMSSante>';
    assert.equal(declaresDoctype(Buffer.from(bomb)), true);
    const result = parseListXml(bomb);
    assert.equal(result.ok, false);
    assert.equal(!result.ok && result.reason, 'doctype_forbidden');
  });

  it('treats a copy cut before the closing root tag as malformed', () => {
    const xml = buildListXml([{ nom: 'op1.mssante.fr', dn: DN }], '2025-02-28T15:42:07Z');
    const result = parseListXml(xml.slice(0, xml.length - 40));
    assert.equal(!result.ok && result.reason, 'xml_malformed');
  });

  it('ignores unknown elements and keeps the known fields', () => {
    const xml = buildListXml([{ nom: 'op1.mssante.fr', dn: DN }], '2025-02-28T15:42:07Z')
      .replace('<Nom>', '<NouveauChamp>x</NouveauChamp><Nom>')
      .replace('<ListeDomaines>', '<Extension><A>1</A></Extension><ListeDomaines>');
    const result = parseListXml(xml);
    assert.ok(result.ok);
    assert.equal(result.list.entries[0]?.nom, 'op1.mssante.fr');
  });

  it('reports a document that is not a whitelist', () => {
    const result = parseListXml('<?xml version="1.0"?><html><body/></html>');
    assert.equal(!result.ok && result.reason, 'xml_not_a_whitelist');
  });

  it('decodes entities and keeps a DN with embedded quotes', () => {
    const dn = 'CN=mss.ch.fr,OU=1970300083,O=CENTRE HOSPITALIER "FRANCK-JOLY",ST=Guyane (973),C=FR';
    const result = parseListXml(buildListXml([{ nom: 'ch.mssante.fr', dn, description: 'A & B <c>' }], '2025-02-28T15:42:07Z'));
    assert.ok(result.ok);
    assert.equal(result.list.entries[0]?.dn, dn);
    assert.equal(result.list.entries[0]?.description, 'A & B <c>');
  });
});
