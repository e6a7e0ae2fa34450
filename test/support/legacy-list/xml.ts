/*
 * FROZEN copy of v0.1's list preparation (xmldom + xml-crypto + fast-xml-parser), kept only as the
 * oracle of the differential test (test/whitelist/libxml-differential.test.ts, bench/list-fuzz.mjs):
 * the libxml2 path must give the same verdict and entries, or a documented safer refusal.
 * Do not fix or extend it.
 */
/**
 * XML → raw entries, nothing else. The list format is in docs/mssante-rules.md §2; unknown elements are
 * ignored, a DOCTYPE is refused, and a file that is not well-formed (a truncated download) is unusable.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { LoadFailureAt } from '../../../src/whitelist/failures.js';

export const LIST_NAMESPACE = 'https://listeblanche.mssante.fr/schema';

/** One `<Domaine>` as written in the file: trimmed texts, nothing interpreted yet. */
export interface RawEntry {
  /** Position in the file, from 0: lets a report point at the entry. */
  readonly index: number;
  readonly nom: string;
  readonly description: string;
  readonly dn: string;
  readonly responsableContact: string;
  readonly supportContact: string;
  readonly dateMaj: string;
}

export interface RawList {
  readonly generatedAt: string;
  readonly entries: readonly RawEntry[];
}

export type XmlFailure = LoadFailureAt<'document'>;

export type RawListResult =
  { readonly ok: true; readonly list: RawList } | { readonly ok: false; readonly reason: XmlFailure; readonly detail: string };

const ENTRIES_PATH = 'ListeBlancheMSSante.ListeDomaines.Domaine';

const parser = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  parseTagValue: false,
  trimValues: true,
  processEntities: true,
  htmlEntities: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  isArray: (_name, jpath) => jpath === ENTRIES_PATH || jpath === 'ListeBlancheMSSante.ListeDomaines',
});

/** True when the prolog (before the root element) declares a DOCTYPE: entities are never needed here. */
export function hasDoctype(xml: string): boolean {
  let i = 0;
  for (;;) {
    i = xml.indexOf('<', i);
    if (i < 0) return false;
    if (xml.startsWith('<?', i)) {
      i = xml.indexOf('?>', i);
      if (i < 0) return false;
    } else if (xml.startsWith('<!--', i)) {
      i = xml.indexOf('-->', i);
      if (i < 0) return false;
    } else {
      return xml.startsWith('<!DOCTYPE', i) || xml.startsWith('<!doctype', i);
    }
  }
}

function text(value: unknown): string {
  if (typeof value === 'string') return value.trim();
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  // An element with children or attributes where text was expected: not a usable value.
  return '';
}

/** `wellFormed`: the caller already proved it (a verified signature parsed it strictly); skips the validator. */
export function parseListXml(xml: string, wellFormed = false): RawListResult {
  if (hasDoctype(xml)) {
    return { ok: false, reason: 'doctype_forbidden', detail: 'the list declares a DOCTYPE; MSSante lists never do' };
  }
  let document: unknown;
  try {
    const validation = wellFormed ? true : XMLValidator.validate(xml);
    if (validation !== true) {
      const { msg, line, col } = validation.err;
      return { ok: false, reason: 'xml_malformed', detail: `not well-formed XML at line ${line}, column ${col}: ${msg}` };
    }
    document = parser.parse(xml);
  } catch (error) {
    return { ok: false, reason: 'xml_malformed', detail: `XML parser failed: ${(error as Error).message}` };
  }
  const root = (document as Record<string, unknown>)['ListeBlancheMSSante'];
  if (root === undefined || root === null || typeof root !== 'object') {
    return { ok: false, reason: 'xml_not_a_whitelist', detail: 'root element ListeBlancheMSSante not found' };
  }
  const rootObject = root as Record<string, unknown>;
  const lists = (rootObject['ListeDomaines'] as unknown[] | undefined) ?? [];
  if (lists.length !== 1) {
    return { ok: false, reason: 'xml_not_a_whitelist', detail: `expected one ListeDomaines element, found ${lists.length}` };
  }
  const list = lists[0];
  const domaines =
    typeof list === 'object' && list !== null
      ? (((list as Record<string, unknown>)['Domaine'] as unknown[] | undefined) ?? [])
      : [];
  const entries: RawEntry[] = new Array<RawEntry>(domaines.length);
  for (let index = 0; index < domaines.length; index++) {
    const d = domaines[index];
    const o = typeof d === 'object' && d !== null ? (d as Record<string, unknown>) : {};
    entries[index] = {
      index,
      nom: text(o['Nom']),
      description: text(o['Description']),
      dn: text(o['DNCertificatOperateur']),
      responsableContact: text(o['ResponsableContact']),
      supportContact: text(o['SupportContact']),
      dateMaj: text(o['DateMAJ']),
    };
  }
  return { ok: true, list: { generatedAt: text(rootObject['DateDeGeneration']), entries } };
}
