/**
 * Synthetic lists in the real file's format, through the tests' own builder (test/support/xmlsec.ts,
 * loaded with tsx only here, never in the load generator). Shaped like the real list: several
 * domains per certificate (up to ~40), a few domains served by two certificates.
 */
import { tsImport } from 'tsx/esm/api';

const DEPTS = [
  'Paris (75)',
  'Rhone (69)',
  'Gironde (33)',
  'Nord (59)',
  'Bouches-du-Rhone (13)',
  'Haute-Garonne (31)',
  'Cher (18)',
];

export async function buildSyntheticList(count, generatedAt = '2025-02-28T15:42:07Z') {
  const { buildListXml } = await tsImport('../test/support/xmlsec.ts', import.meta.url);
  const certificates = Math.max(2, Math.round(count / 13));
  const dn = (k) =>
    `CN=mx${k}.operateur-${k % 97}.mssante.fr,OU=1${String(100000000 + k).slice(1)},O=OPERATEUR DE SANTE ${k},ST=${DEPTS[k % DEPTS.length]},C=FR`;
  const entries = [];
  for (let i = 0; entries.length < count; i++) {
    const k = i % certificates;
    const nom = `etab-${i}.sante-${i % 101}.mssante.fr`;
    entries.push({ nom, dn: dn(k) });
    // Every 50th domain is also served by a second certificate (another operator).
    if (i % 50 === 49 && entries.length < count) entries.push({ nom, dn: dn((k + 1) % certificates) });
  }
  return buildListXml(entries, generatedAt);
}
