/**
 * Regenerates examples/: a demo whitelist signed (by xmlsec1) with a throw-away demo signer whose
 * certificate is kept and whose key is not. `npm start` serves this list, verified like a real one.
 * Run: node --import tsx scripts/make-demo-list.ts
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestPki, operatorSubject } from '../test/support/pki.js';
import { buildListXml, signList } from '../test/support/xmlsec.js';

const out = join(import.meta.dirname, '..', 'examples');
const pki = new TestPki();
const ca = pki.createCa(
  'demo-ca',
  [
    ['C', 'FR'],
    ['O', 'MSSANTE-POLICYD DEMO'],
    ['CN', 'AC DEMO MSSANTE-POLICYD (NOT IGC-SANTE)'],
  ],
  {
    notAfter: '20361231235959Z',
  },
);
const signer = pki.issue(
  'demo-signer',
  [
    ['C', 'FR'],
    ['O', 'MSSANTE-POLICYD DEMO'],
    ['OU', '000000000000000'],
    ['CN', 'demo-signer.mssante-policyd.invalid'],
  ],
  ca,
  {
    usage: 'signing',
    notAfter: '20361231235959Z',
  },
);
const hopital = operatorSubject('mx.demo-hopital.test', 'CENTRE HOSPITALIER DE DEMONSTRATION', '1750000000', 'Paris (75)');
const clinique = operatorSubject('smtp.demo-clinique.test', 'CLINIQUE "DEMO"', '318310021300028', 'Haute-Garonne (31)');
const dn = (s: typeof hopital): string =>
  [...s]
    .reverse()
    .map(([t, v]) => `${t}=${v}`)
    .join(',');
const entries = [
  { nom: 'demo-hopital.mssante.fr', dn: dn(hopital), description: 'Demo: hospital domain' },
  { nom: 'pharmacie.demo-hopital.mssante.fr', dn: dn(hopital), description: 'Demo: a sub-domain listed explicitly' },
  { nom: 'demo-clinique.mssante.fr', dn: dn(clinique), description: 'Demo: clinic served by another operator' },
  // The 2020-10-07 incident: junk entries are skipped, the rest of the list still applies.
  { nom: '_', dn: '_', description: '_' },
];
const xml = buildListXml(entries, new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'));
writeFileSync(join(out, 'demo-whitelist.xml'), signList(xml, { keyPath: signer.keyPath, certPath: signer.certPath }));
writeFileSync(join(out, 'demo-signer.pem'), signer.certPem);
process.stdout.write(`wrote ${out}/demo-whitelist.xml and demo-signer.pem\n`);
