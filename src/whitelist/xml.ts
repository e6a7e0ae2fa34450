/**
 * XML → one libxml2 tree → raw entries. The list format is in docs/mssante-rules.md §2; unknown elements
 * are ignored, a DOCTYPE is refused, and a file that is not well-formed (a truncated download) is
 * unusable. The signature (xmldsig.ts) is verified on the same tree the entries are read from, so
 * what is indexed is what was signed, read by one parser.
 *
 * libxml2 comes from the npm package libxml2-wasm (WebAssembly, no native build): its memory only
 * grows, so the daemon parses in its list worker, whose exit gives the memory back. The document
 * lives in that memory and must be disposed (ListDocument.dispose()).
 */
import { ParseOption, XmlCData, XmlDocument, XmlElement, XmlParseError, XmlText, type XmlTreeNode } from 'libxml2-wasm';
import type { LoadFailureAt } from './failures.js';
import { declaresDoctype } from './list-bytes.js';

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

export type ListDocumentResult =
  | { readonly ok: true; readonly document: XmlDocument }
  | { readonly ok: false; readonly reason: XmlFailure; readonly detail: string };

/**
 * No network, no external entity, no DTD loading or validation, no entity substitution (a DOCTYPE
 * is refused before parsing anyway). XML_PARSE_HUGE lifts the 10 MB text-node limit, which
 * --max-list-bytes already bounds (a list must reach the verifier and fail there, as v0.1 did);
 * nesting stays limited (2048 levels with it; the list needs four).
 */
const PARSE_OPTIONS =
  ParseOption.XML_PARSE_NONET | ParseOption.XML_PARSE_NO_XXE | ParseOption.XML_PARSE_NO_SYS_CATALOG | ParseOption.XML_PARSE_HUGE;

/** Attacker-controlled text going into a detail string: one line, bounded. */
function quote(text: string, max = 160): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  return JSON.stringify(cut);
}

/**
 * Parses the list's UTF-8 bytes into a libxml2 document, read as UTF-8 whatever the declaration
 * says. The bytes are handed to libxml2 as they are: the worker never holds the document as a
 * JavaScript string (list-bytes.ts). Warnings are refused like errors: whatever libxml2 had to
 * guess, the signer may have read otherwise. The caller owns the document and must dispose() it.
 */
export function parseListDocument(bytes: Uint8Array): ListDocumentResult {
  if (bytes.byteLength === 0) return { ok: false, reason: 'xml_malformed', detail: 'empty document' };
  // Refused before parsing, anywhere in the text: no entity expansion, no internal subset, ever.
  if (declaresDoctype(bytes)) {
    return { ok: false, reason: 'doctype_forbidden', detail: 'the list declares a DOCTYPE; MSSante lists never do' };
  }
  let document: XmlDocument;
  try {
    document = XmlDocument.fromBuffer(bytes, { encoding: 'utf-8', option: PARSE_OPTIONS });
  } catch (error) {
    const message = error instanceof XmlParseError ? error.message.trim() : String((error as Error)?.message ?? error);
    return { ok: false, reason: 'xml_malformed', detail: `not well-formed XML: ${quote(message)}` };
  }
  const problem = documentProblem(document);
  if (problem !== null) {
    document.dispose();
    return problem;
  }
  return { ok: true, document };
}

function documentProblem(document: XmlDocument): Exclude<ListDocumentResult, { ok: true }> | null {
  if (document.warnings.length > 0) {
    const first = document.warnings[0]?.message.trim() ?? '';
    return { ok: false, reason: 'xml_malformed', detail: `not well-formed XML (warning): ${quote(first)}` };
  }
  if (document.dtd !== null) {
    return { ok: false, reason: 'doctype_forbidden', detail: 'the list declares a DOCTYPE; MSSante lists never do' };
  }
  if (document.version !== '1.0') {
    return { ok: false, reason: 'xml_malformed', detail: `XML version ${quote(document.version, 10)}; lists are XML 1.0` };
  }
  return null;
}

/** The element children of `parent` whose local name is `name` (any namespace, as the list has always been read). */
function childElements(parent: XmlElement, name: string): XmlElement[] {
  const found: XmlElement[] = [];
  for (let n: XmlTreeNode | null = parent.firstChild; n !== null; n = n.next) {
    if (n instanceof XmlElement && n.name === name) found.push(n);
  }
  return found;
}

/**
 * The trimmed text of a field: its text and CDATA, comments skipped. A field holding elements is
 * not a usable value (''), nor is a field written twice.
 */
function fieldText(fields: ReadonlyMap<string, XmlElement | null>, name: string): string {
  const el = fields.get(name);
  if (el === undefined || el === null) return '';
  let text = '';
  for (let n: XmlTreeNode | null = el.firstChild; n !== null; n = n.next) {
    if (n instanceof XmlText || n instanceof XmlCData) text += n.content;
    else if (n instanceof XmlElement) return '';
  }
  // A CR can only be written &#13;: the v0.1 reader kept it as those five characters while the
  // digest covered a CR. The ANS writes it in base64 only; in data it is refused, not guessed.
  if (text.includes('\r')) throw new UnreadableList(`a CR (&#13;) in ${el.name}; MSSante lists never hold one in their data`);
  return text.trim();
}

class UnreadableList extends Error {}

const FIELDS = new Set(['Nom', 'Description', 'DNCertificatOperateur', 'ResponsableContact', 'SupportContact', 'DateMAJ']);

function readDomaine(domaine: XmlElement, index: number): RawEntry {
  // null: the field is written more than once.
  const fields = new Map<string, XmlElement | null>();
  for (let n: XmlTreeNode | null = domaine.firstChild; n !== null; n = n.next) {
    if (!(n instanceof XmlElement)) continue;
    const name = n.name;
    if (!FIELDS.has(name)) continue;
    fields.set(name, fields.has(name) ? null : n);
  }
  return {
    index,
    nom: fieldText(fields, 'Nom'),
    description: fieldText(fields, 'Description'),
    dn: fieldText(fields, 'DNCertificatOperateur'),
    responsableContact: fieldText(fields, 'ResponsableContact'),
    supportContact: fieldText(fields, 'SupportContact'),
    dateMaj: fieldText(fields, 'DateMAJ'),
  };
}

export type ListReadingResult =
  | { readonly ok: true; readonly generatedAt: string; readonly entryCount: number }
  | { readonly ok: false; readonly reason: XmlFailure; readonly detail: string };

/**
 * Reads the entries of a parsed list and hands each one to `onEntry` as it is read: nothing is kept
 * here (the raw entries of a 50 000-entry list held 25 MiB at the worker's peak). The document is
 * left to its owner. A failure may come after some entries were handed over: the caller drops them.
 */
export function forEachListEntry(document: XmlDocument, onEntry: (entry: RawEntry) => void): ListReadingResult {
  // libxml2-wasm gives a processing instruction no sibling links: a walk would stop at one. The
  // ANS writes none; the signature verifier refuses them first, with its own reason.
  const instructions = document.eval('count(//processing-instruction())');
  if (typeof instructions !== 'number' || instructions > 0) {
    return { ok: false, reason: 'xml_malformed', detail: 'the list holds a processing instruction; MSSante lists never do' };
  }
  try {
    return readEntries(document, onEntry);
  } catch (error) {
    if (error instanceof UnreadableList) return { ok: false, reason: 'xml_malformed', detail: error.message };
    return {
      ok: false,
      reason: 'xml_malformed',
      detail: `cannot read the list: ${quote(String((error as Error)?.message ?? error))}`,
    };
  }
}

function readEntries(document: XmlDocument, onEntry: (entry: RawEntry) => void): ListReadingResult {
  const root = document.root;
  if (root.name !== 'ListeBlancheMSSante') {
    return { ok: false, reason: 'xml_not_a_whitelist', detail: 'root element ListeBlancheMSSante not found' };
  }
  const lists = childElements(root, 'ListeDomaines');
  if (lists.length !== 1) {
    return { ok: false, reason: 'xml_not_a_whitelist', detail: `expected one ListeDomaines element, found ${lists.length}` };
  }
  let entryCount = 0;
  for (let n: XmlTreeNode | null = (lists[0] as XmlElement).firstChild; n !== null; n = n.next) {
    if (n instanceof XmlElement && n.name === 'Domaine') onEntry(readDomaine(n, entryCount++));
  }
  const dates = childElements(root, 'DateDeGeneration');
  const generatedAt = dates.length === 1 ? fieldText(new Map([['d', dates[0] as XmlElement]]), 'd') : '';
  return { ok: true, generatedAt, entryCount };
}

/** The entries of a parsed list, in an array (tests, reports); the document is left to its owner. */
export function readListEntries(document: XmlDocument): RawListResult {
  const entries: RawEntry[] = [];
  const read = forEachListEntry(document, (entry) => entries.push(entry));
  return read.ok ? { ok: true, list: { generatedAt: read.generatedAt, entries } } : read;
}

/** Parse and read in one call (unsigned lists, tests); the document is disposed before returning. */
export function parseListXml(xml: string): RawListResult {
  const parsed = parseListDocument(Buffer.from(xml, 'utf8'));
  if (!parsed.ok) return parsed;
  try {
    return readListEntries(parsed.document);
  } finally {
    parsed.document.dispose();
  }
}
