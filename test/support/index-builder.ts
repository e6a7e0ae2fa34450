/** Builds a WhitelistIndex from (domain, DN) pairs through the real validation path. */
import { WhitelistIndex } from '../../src/whitelist/whitelist-index.js';
import { validateEntries } from '../../src/whitelist/validate.js';
import type { RawEntry } from '../../src/whitelist/xml.js';

export function rawEntry(index: number, nom: string, dn: string): RawEntry {
  return {
    index,
    nom,
    dn,
    description: `test ${nom}`,
    responsableContact: '',
    supportContact: '',
    dateMaj: '2025-01-01T00:00:00Z',
  };
}

export function buildIndex(
  pairs: ReadonlyArray<readonly [string, string]>,
  generatedAt = '2025-02-28T15:42:07Z',
  sha256: string | null = null,
): WhitelistIndex {
  const { entries, rejected } = validateEntries(pairs.map(([nom, dn], i) => rawEntry(i, nom, dn)));
  return new WhitelistIndex({ generatedAt, sha256 }, entries, rejected);
}
