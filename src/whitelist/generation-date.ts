/**
 * DateDeGeneration's format (docs/mssante-rules.md §2): `YYYY-MM-DDTHH:MM:SSZ`. A module of its own,
 * with no dependency: the daemon's main thread reads dates (the change journal) and must not load the
 * list code, whose libxml2 WebAssembly costs ~20 MiB of memory wherever it is imported.
 */
export const GENERATION_DATE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;

export function isValidGenerationDate(value: string): boolean {
  return GENERATION_DATE.test(value) && !Number.isNaN(Date.parse(value));
}
