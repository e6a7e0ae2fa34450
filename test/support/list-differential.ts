/**
 * Differential check of list preparation: the libxml2 path (src/whitelist/prepare.ts) against the
 * frozen v0.1 path (test/support/legacy-list: xmldom + xml-crypto + fast-xml-parser), on the same
 * bytes and options. Same verdict and same entries, or one of the DOCUMENTED divergences below —
 * each a refusal by the new path where the old one accepted or refused for another reason. A list
 * the new path accepts and the old one refused, or accepted with other entries, is never documented.
 *
 * Also the mutation generator of the fuzz run (scripts/list-fuzz.ts and the test's subset):
 * deterministic from a seed, mutation kinds that matter to XML and XMLDSig.
 */
import { isDeepStrictEqual } from 'node:util';
import { prepareList, type PrepareOptions, type PrepareResult } from '../../src/whitelist/prepare.js';
import { prepareList as legacyPrepareList } from './legacy-list/prepare.js';

/** 'ok', or the failure reason id. */
export type Outcome = string;

export interface Comparison {
  /** same: identical result; documented: a known, safer divergence; divergent: a failure. */
  readonly kind: 'same' | 'documented' | 'divergent';
  readonly old: Outcome;
  readonly new: Outcome;
  /** For documented: which rule; for divergent: what differs. */
  readonly note: string;
  /** The new path's refusal, when it refused. */
  readonly detail?: string;
}

export interface Divergence {
  readonly id: string;
  /** Why the new path is right to refuse (README/SECURITY.md say it too). */
  readonly why: string;
  readonly matches: (old: PrepareResult, now: PrepareResult & { ok: false }) => boolean;
}

const failed = (r: PrepareResult): r is PrepareResult & { ok: false } => !r.ok;

/**
 * Every way the new path may differ from the old one. Each is a refusal by the new path; the old
 * outcome is either an acceptance or another refusal.
 */
export const DOCUMENTED_DIVERGENCES: readonly Divergence[] = [
  {
    id: 'character-reference-anywhere',
    why:
      'a numeric character reference other than &#13; is refused anywhere in a signed list, not only before the ' +
      'Signature, and in an unsigned list too (xml_malformed), where fast-xml-parser used to leave it undecoded: ' +
      'the ANS writes none',
    matches: (_old, now) =>
      (now.reason === 'signature_profile' || now.reason === 'xml_malformed') && /numeric character reference/.test(now.detail),
  },
  {
    id: 'cr-in-data',
    why:
      'a CR (&#13;) in the data is refused: the old reader kept the five characters "&#13;" while the digest ' +
      'covered a CR, so the indexed text was not the signed one; the ANS writes &#13; in base64 only',
    matches: (_old, now) => now.reason === 'xml_malformed' && /a CR \(&#13;\)/.test(now.detail),
  },
  {
    id: 'doctype-anywhere',
    why: 'the text "<!DOCTYPE" is refused anywhere in an unsigned list too (the signed path always did)',
    matches: (_old, now) => now.reason === 'doctype_forbidden',
  },
  {
    id: 'processing-instruction-anywhere',
    why:
      'a processing instruction is refused wherever libxml2 finds it, the epilog and unsigned lists too ' +
      '(libxml2-wasm gives it no sibling links, and the ANS writes none)',
    matches: (_old, now) => /processing instruction/.test(now.detail),
  },
  {
    id: 'libxml2-stricter-parser',
    why:
      'libxml2 refuses what the old parsers let through (fast-xml-parser for unsigned lists, xmldom warnings aside): ' +
      'undefined entities, invalid characters or names, namespace errors and warnings, nesting beyond 2048 levels, ' +
      'an XML version other than 1.0',
    matches: (old, now) => now.reason === 'xml_malformed' && (old.ok || old.reason !== 'xml_malformed'),
  },
];

function outcome(r: PrepareResult): Outcome {
  return r.ok ? 'ok' : r.reason;
}

/** What a usable list is made of, signer by fingerprint (the PEM text is the same certificate). */
function essence(r: PrepareResult & { ok: true }): unknown {
  const { signature, ...rest } = r.list;
  return { ...rest, signature: signature.verified ? signature.signer.fingerprint256 : signature.why };
}

/** Every string with its whitespace removed. */
function withoutWhitespace(value: unknown): unknown {
  if (typeof value === 'string') return value.replace(/\s+/g, '');
  if (Array.isArray(value)) return value.map(withoutWhitespace);
  if (typeof value === 'object' && value !== null)
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutWhitespace(v)]));
  return value;
}

/**
 * The one documented difference between two usable lists: fast-xml-parser trimmed each piece of a
 * field split by a comment or a CDATA section before joining them ("Domaine <!-- -->de" read as
 * "Domainede"); libxml2 reads the signed text. Same entries once whitespace is ignored.
 */
export const WHITESPACE_AROUND_SPLIT_TEXT =
  'the old reader trimmed each piece of a field split by a comment or CDATA section; the new one reads the signed text';

export function compareResults(old: PrepareResult, now: PrepareResult): Comparison {
  const base = { old: outcome(old), new: outcome(now) };
  if (old.ok && now.ok) {
    if (isDeepStrictEqual(essence(old), essence(now))) return { kind: 'same', ...base, note: '' };
    if (isDeepStrictEqual(withoutWhitespace(essence(old)), withoutWhitespace(essence(now))))
      return { kind: 'documented', ...base, note: 'whitespace-around-split-text' };
    return { kind: 'divergent', ...base, note: entriesDifference(old, now) };
  }
  if (failed(old) && failed(now) && old.reason === now.reason) return { kind: 'same', ...base, note: '' };
  if (failed(now)) {
    const rule = DOCUMENTED_DIVERGENCES.find((d) => d.matches(old, now));
    if (rule !== undefined) return { kind: 'documented', ...base, note: rule.id, detail: now.detail };
    return {
      kind: 'divergent',
      ...base,
      note: `new: ${now.detail.slice(0, 200)}; old: ${old.ok ? 'accepted' : old.detail.slice(0, 200)}`,
    };
  }
  return {
    kind: 'divergent',
    ...base,
    note: `the new path accepts what the old one refused: ${(old as { detail: string }).detail.slice(0, 200)}`,
  };
}

function entriesDifference(old: PrepareResult & { ok: true }, now: PrepareResult & { ok: true }): string {
  const a = old.list;
  const b = now.list;
  if (a.rawEntryCount !== b.rawEntryCount) return `raw entries ${a.rawEntryCount} vs ${b.rawEntryCount}`;
  for (let i = 0; i < Math.max(a.entries.length, b.entries.length); i++) {
    if (!isDeepStrictEqual(a.entries[i], b.entries[i]))
      return `entry ${i}: ${JSON.stringify(a.entries[i])?.slice(0, 200)} vs ${JSON.stringify(b.entries[i])?.slice(0, 200)}`;
  }
  for (let i = 0; i < Math.max(a.rejected.length, b.rejected.length); i++) {
    if (!isDeepStrictEqual(a.rejected[i], b.rejected[i]))
      return `rejected ${i}: ${JSON.stringify(a.rejected[i])?.slice(0, 200)} vs ${JSON.stringify(b.rejected[i])?.slice(0, 200)}`;
  }
  return `list metadata: ${a.generatedAt} vs ${b.generatedAt}`;
}

/** Both paths on the same bytes. */
export function differential(bytes: Uint8Array, options: PrepareOptions): Comparison {
  return compareResults(legacyPrepareList(bytes, options), prepareList(bytes, options));
}

// ------------------------------------------------------------------ mutations

/** mulberry32: small, fast, deterministic. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rng = () => number;
const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng() * items.length)] as T;
const between = (rng: Rng, lo: number, hi: number): number => lo + Math.floor(rng() * (hi - lo + 1));

/** Offsets of every match of `re` (global) in `text`, optionally before `limit`. */
function offsets(text: string, re: RegExp, limit = text.length): number[] {
  const found: number[] = [];
  for (const m of text.matchAll(re)) if ((m.index ?? 0) < limit) found.push(m.index ?? 0);
  return found;
}

function signatureStart(xml: string): number {
  const i = xml.search(/<(?:[\w.-]+:)?Signature[\s>]/);
  return i < 0 ? xml.length : i;
}

function insertAt(xml: string, at: number, what: string): string {
  return xml.slice(0, at) + what + xml.slice(at);
}

/** A position just after a `>` (between markup), anywhere or before the Signature. */
function afterTag(rng: Rng, xml: string, signedOnly: boolean): number {
  const all = offsets(xml, />/g, signedOnly ? signatureStart(xml) : xml.length);
  return (pick(rng, all.length > 0 ? all : [0]) ?? 0) + 1;
}

/** Offset of the `>` (or `/>`) closing a random start tag. */
function startTagEnd(rng: Rng, xml: string, signedOnly: boolean): number {
  const tags = offsets(xml, /<[A-Za-z][^<>]*?(\/?)>/g, signedOnly ? signatureStart(xml) : xml.length);
  const at = pick(rng, tags.length > 0 ? tags : [0]);
  const close = xml.indexOf('>', at);
  return xml[close - 1] === '/' ? close - 1 : close;
}

/** A random text content `<Field>text</Field>` of the data: its start and end offsets. */
function textSpan(rng: Rng, xml: string): [number, number] | null {
  const spans = [
    ...xml.slice(0, signatureStart(xml)).matchAll(/<(Nom|Description|DNCertificatOperateur|DateMAJ|SupportContact)>([^<]+)</g),
  ];
  if (spans.length === 0) return null;
  const m = pick(rng, spans);
  const start = (m.index ?? 0) + (m[1]?.length ?? 0) + 2;
  return [start, start + (m[2]?.length ?? 0)];
}

const JUNK_ENTRIES = [
  '<Domaine><Nom>_</Nom><Description>_</Description><DNCertificatOperateur>_</DNCertificatOperateur><ResponsableContact>_</ResponsableContact><SupportContact>_</SupportContact><DateMAJ>_</DateMAJ></Domaine>',
  '<Domaine><Nom>evil.fr</Nom><DNCertificatOperateur>CN=mx.evil.fr,O=EVIL,C=FR</DNCertificatOperateur></Domaine>',
  '<Domaine><Nom>a.fr</Nom><Nom>b.fr</Nom><DNCertificatOperateur>CN=x,C=FR</DNCertificatOperateur></Domaine>',
  '<Domaine/>',
];

export const MUTATION_KINDS = [
  'byte-flip-signed',
  'element-insert',
  'attribute-insert',
  'namespace-unused-declaration',
  'namespace-default-change',
  'namespace-prefixed-rebinding',
  'whitespace-in-tag',
  'whitespace-between',
  'whitespace-in-text',
  'crlf',
  'character-reference',
  'entity-reference',
  'cdata-wrap',
  'comment-insert',
  'comment-in-text',
  'processing-instruction',
  'junk-entry',
  'duplicate-field',
  'empty-element-form',
  'attribute-quote-style',
  'signature-base64-whitespace',
  'signature-byte-flip',
  'second-signature',
  'wrap-list',
  'truncate',
] as const;
export type MutationKind = (typeof MUTATION_KINDS)[number];

/** One mutation of `kind` at a random place; the text may come back unchanged when the kind has no target. */
export function mutate(xml: string, kind: MutationKind, rng: Rng): string {
  const sigStart = signatureStart(xml);
  switch (kind) {
    case 'byte-flip-signed': {
      const at = between(rng, 0, Math.max(0, sigStart - 1));
      return xml.slice(0, at) + String.fromCharCode(between(rng, 0x20, 0x7e)) + xml.slice(at + 1);
    }
    case 'element-insert':
      return insertAt(
        xml,
        afterTag(rng, xml, rng() < 0.7),
        pick(rng, [
          '<Extra>x</Extra>',
          '<Nom>evil.fr</Nom>',
          '<ListeDomaines/>',
          '<DateDeGeneration>2030-01-01T00:00:00Z</DateDeGeneration>',
        ]),
      );
    case 'attribute-insert':
      return insertAt(
        xml,
        startTagEnd(rng, xml, rng() < 0.5),
        pick(rng, [' a="1"', ' xml:lang="fr"', ' Id="x"', ' URI="#x"', ' xml:space="preserve"']),
      );
    case 'namespace-unused-declaration':
      return insertAt(
        xml,
        startTagEnd(rng, xml, rng() < 0.5),
        pick(rng, [
          ' xmlns:x="urn:x"',
          ' xmlns:ds="http://www.w3.org/2000/09/xmldsig#"',
          ' xmlns:y="https://listeblanche.mssante.fr/schema"',
        ]),
      );
    case 'namespace-default-change':
      return insertAt(
        xml,
        startTagEnd(rng, xml, rng() < 0.5),
        pick(rng, [
          ' xmlns="urn:other"',
          ' xmlns=""',
          ' xmlns="http://www.w3.org/2000/09/xmldsig#"',
          ' xmlns="https://listeblanche.mssante.fr/schema"',
        ]),
      );
    case 'namespace-prefixed-rebinding': {
      const fields = offsets(xml, /<Nom>[^<]*<\/Nom>/g, sigStart);
      if (fields.length === 0) return xml;
      const at = pick(rng, fields);
      const end = xml.indexOf('</Nom>', at) + 6;
      const inner = xml.slice(at + 5, end - 6);
      const ns = pick(rng, ['https://listeblanche.mssante.fr/schema', 'urn:other', 'http://www.w3.org/2000/09/xmldsig#']);
      return `${xml.slice(0, at)}<p:Nom xmlns:p="${ns}">${inner}</p:Nom>${xml.slice(end)}`;
    }
    case 'whitespace-in-tag':
      return insertAt(xml, startTagEnd(rng, xml, false), pick(rng, [' ', '\n', '\t', '  \r\n ']));
    case 'whitespace-between':
      return insertAt(xml, afterTag(rng, xml, false), pick(rng, [' ', '\n', '\t', '\r\n', '\u00a0']));
    case 'whitespace-in-text': {
      const span = textSpan(rng, xml);
      if (span === null) return xml;
      return insertAt(
        xml,
        pick(rng, [span[0], span[1], between(rng, span[0], span[1])]),
        pick(rng, [' ', '\t', '\n', '\u00a0', '\u2028', '\r']),
      );
    }
    case 'crlf':
      return rng() < 0.5
        ? xml.replace(/\n/g, '\r\n')
        : xml.replace(/\n/g, () => (rng() < 0.05 ? '\r\n' : rng() < 0.05 ? '\r' : '\n'));
    case 'character-reference': {
      const span = textSpan(rng, xml);
      if (span === null) return xml;
      const at = between(rng, span[0], Math.max(span[0], span[1] - 1));
      const ch = xml.charCodeAt(at);
      const ref = pick(rng, [`&#${ch};`, `&#x${ch.toString(16)};`, '&#13;', '&#xD;', '&#10;', '&#0;', '&#xFFFE;']);
      return (
        xml.slice(0, at) + ref + xml.slice(ref.startsWith(`&#${ch}`) || ref.startsWith(`&#x${ch.toString(16)}`) ? at + 1 : at)
      );
    }
    case 'entity-reference': {
      const span = textSpan(rng, xml);
      if (span === null) return xml;
      return insertAt(
        xml,
        between(rng, span[0], span[1]),
        pick(rng, ['&amp;', '&lt;', '&gt;', '&quot;', '&apos;', '&nbsp;', '&evil;', '&', '&amp']),
      );
    }
    case 'cdata-wrap': {
      const span = textSpan(rng, xml);
      if (span === null) return xml;
      const cut = between(rng, span[0], span[1]);
      return `${xml.slice(0, span[0])}<![CDATA[${xml.slice(span[0], cut)}]]>${xml.slice(cut)}`;
    }
    case 'comment-insert':
      return insertAt(
        xml,
        afterTag(rng, xml, false),
        pick(rng, ['<!-- c -->', '<!---->', '<!-- <Signature> -->', '<!-- -- -->']),
      );
    case 'comment-in-text': {
      const span = textSpan(rng, xml);
      if (span === null) return xml;
      return insertAt(xml, between(rng, span[0], span[1]), pick(rng, ['<!-- note -->', '<!---->']));
    }
    case 'processing-instruction':
      return insertAt(
        xml,
        afterTag(rng, xml, false),
        pick(rng, ['<?pi x?>', '<?xml-stylesheet href="x"?>', '<?xml version="1.0"?>']),
      );
    case 'junk-entry': {
      const at = offsets(xml, /<Domaine>/g, sigStart);
      if (at.length === 0) return xml;
      return insertAt(xml, pick(rng, at), pick(rng, JUNK_ENTRIES));
    }
    case 'duplicate-field': {
      const fields = [...xml.slice(0, sigStart).matchAll(/<(Nom|DNCertificatOperateur|DateDeGeneration)>[^<]*<\/\1>/g)];
      if (fields.length === 0) return xml;
      const m = pick(rng, fields);
      return insertAt(xml, (m.index ?? 0) + m[0].length, m[0]);
    }
    case 'empty-element-form': {
      const empties = offsets(xml, /<([A-Za-z]+)><\/\1>/g);
      if (empties.length > 0 && rng() < 0.5) {
        const at = pick(rng, empties);
        return xml.slice(0, at) + xml.slice(at).replace(/<([A-Za-z]+)><\/\1>/, '<$1/>');
      }
      const selfClosed = offsets(xml, /<([A-Za-z]+)( [^<>]*)?\/>/g);
      if (selfClosed.length === 0) return xml;
      const at = pick(rng, selfClosed);
      return xml.slice(0, at) + xml.slice(at).replace(/<([A-Za-z]+)((?: [^<>]*)?)\/>/, '<$1$2></$1>');
    }
    case 'attribute-quote-style': {
      const attrs = offsets(xml, /="[^"<]*"/g);
      if (attrs.length === 0) return xml;
      const at = pick(rng, attrs);
      return xml.slice(0, at) + xml.slice(at).replace(/="([^"<]*)"/, "='$1'");
    }
    case 'signature-base64-whitespace': {
      const values = offsets(xml, /<(?:SignatureValue|X509Certificate|DigestValue)>/g);
      if (values.length === 0) return xml;
      const at = xml.indexOf('>', pick(rng, values)) + 1 + between(rng, 0, 40);
      return insertAt(xml, at, pick(rng, ['\n', '&#13;\n', ' ', '\t', '&#10;', '&#65;']));
    }
    case 'signature-byte-flip': {
      if (sigStart >= xml.length) return xml;
      const at = between(rng, sigStart, xml.length - 1);
      return xml.slice(0, at) + String.fromCharCode(between(rng, 0x20, 0x7e)) + xml.slice(at + 1);
    }
    case 'second-signature': {
      const sig = /<Signature[\s\S]*<\/Signature>/.exec(xml)?.[0];
      if (sig === undefined) return xml;
      return insertAt(xml, pick(rng, [afterTag(rng, xml, true), xml.indexOf('</Signature>') + 12]), sig);
    }
    case 'wrap-list':
      return xml
        .replace('<ListeDomaines>', '<Archive><ListeDomaines>')
        .replace('</ListeDomaines>', '</ListeDomaines></Archive><ListeDomaines>' + JUNK_ENTRIES[1] + '</ListeDomaines>');
    case 'truncate':
      return xml.slice(0, between(rng, 0, xml.length - 1));
  }
}

/** 1 to 3 mutations of random kinds; returns the text and the kinds applied. */
export function randomMutation(xml: string, rng: Rng): { text: string; kinds: MutationKind[] } {
  const kinds: MutationKind[] = [];
  let text = xml;
  const n = rng() < 0.7 ? 1 : between(rng, 2, 3);
  for (let i = 0; i < n; i++) {
    const kind = pick(rng, MUTATION_KINDS);
    kinds.push(kind);
    text = mutate(text, kind, rng);
  }
  return { text, kinds };
}

/**
 * The real list cut to its first `count` entries, its Signature removed: to be re-signed with the
 * ANS profile by a test signer (the fuzz run needs thousands of verifications; the old path spends
 * seconds on the full list).
 */
export function realListExcerpt(realXml: string, count: number): string {
  const start = realXml.indexOf('<Domaine>');
  let end = start;
  for (let i = 0; i < count; i++) end = realXml.indexOf('</Domaine>', end) + '</Domaine>'.length;
  const listEnd = realXml.indexOf('</ListeDomaines>');
  const signature = realXml.search(/<Signature[\s>]/);
  return realXml.slice(0, end) + '\n    ' + realXml.slice(listEnd, signature).trimEnd() + '\n</ListeBlancheMSSante>';
}
