/*
 * FROZEN copy of v0.1's list preparation (xmldom + xml-crypto + fast-xml-parser), kept only as the
 * oracle of the differential test (test/whitelist/libxml-differential.test.ts, bench/list-fuzz.mjs):
 * the libxml2 path must give the same verdict and entries, or a documented safer refusal.
 * Do not fix or extend it.
 */
/**
 * XMLDSig verification of the ANS whitelist, restricted to the one profile the ANS uses
 * (docs/mssante-rules.md §2): enveloped signature, last child of the root, exclusive C14N without
 * comments, RSA-SHA256, SHA-256, one Reference URI="", KeyInfo = the signer's leaf certificate.
 * Anything else is refused, which closes the signature-wrapping family of attacks.
 *
 * xml-crypto's `checkSignature()` costs ~19 s CPU on the real 3.6 MB list (XPath node-set sorting),
 * so this module walks the DOM itself and only borrows xml-crypto's exclusive canonicalisation.
 * Pure and synchronous: the life cycle calls it in a worker thread.
 */
import { createHash, createVerify, timingSafeEqual, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DOMParser, type Document, type Element, type Node } from '@xmldom/xmldom';
import { ExclusiveCanonicalization } from 'xml-crypto';
import type { LoadFailureAt } from '../../../src/whitelist/failures.js';
import { normaliseCn, parseDn } from '../../../src/trust/dn.js';
import { readCertificateUsage, signingUsageProblem } from '../../../src/whitelist/x509-usage.js';

/**
 * How the list signer is trusted, as configured: pinned end-entity certificates (`--signer`), and/or
 * CA certificates (`--signer-ca`) whose signer must also carry a configured identity
 * (`--signer-cn`, `--signer-subject`). A CA alone is never enough: the CA that issues the ANS signer
 * also issues every operator's TLS certificate.
 */
export interface SignerTrustConfig {
  readonly signer: readonly string[];
  readonly signerCa: readonly string[];
  readonly signerCn: readonly string[];
  readonly signerSubject: readonly string[];
}

export interface TrustedCertificate {
  readonly path: string;
  readonly certificate: X509Certificate;
}

export interface SignerTrust {
  readonly pins: readonly TrustedCertificate[];
  readonly cas: readonly TrustedCertificate[];
  /** Normalised CNs (normaliseCn) a CA-issued signer may have. */
  readonly cns: readonly string[];
  /** Normalised subject DNs (Dn.key) a CA-issued signer may have, with the text configured. */
  readonly subjects: ReadonlyArray<{ readonly text: string; readonly key: string }>;
}

export interface SignerInfo {
  readonly subject: string;
  readonly issuer: string;
  readonly validFrom: string;
  readonly validTo: string;
  readonly fingerprint256: string;
  readonly trustedBy: 'pinned' | 'ca';
  /** Which pin, or which CA and constraint, let the signer in (for `check` and the logs). */
  readonly matched: string;
  readonly pem: string;
}

/** The document checks come first: the signature is verified on the tree it parses itself. */
export type SignatureFailure = LoadFailureAt<'document' | 'signature'>;

/** The certificate in KeyInfo of a list whose SignatureValue it verifies, but that is not trusted (rotation: compare its fingerprint out of band). */
export interface KeyInfoSigner {
  readonly subject: string;
  readonly issuer: string;
  readonly validFrom: string;
  readonly validTo: string;
  readonly fingerprint256: string;
  readonly pem: string;
}

export type SignatureVerdict =
  | { readonly ok: true; readonly signer: SignerInfo; readonly generatedAt: Date }
  | { readonly ok: false; readonly reason: SignatureFailure; readonly detail: string; readonly keyInfo?: KeyInfoSigner };

const DSIG = 'http://www.w3.org/2000/09/xmldsig#';
const XMLNS = 'http://www.w3.org/2000/xmlns/';
const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#';
const ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature';
const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
const SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256';

const ELEMENT_NODE = 1;
const TEXT_NODE = 3;
const CDATA_SECTION_NODE = 4;
const PROCESSING_INSTRUCTION_NODE = 7;
const COMMENT_NODE = 8;
const DOCUMENT_TYPE_NODE = 10;

const ISO_UTC = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$/;
const BLANK = /^[ \t\r\n]*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

class Refusal extends Error {
  keyInfo?: KeyInfoSigner;
  constructor(
    readonly reason: SignatureFailure,
    readonly detail: string,
  ) {
    super(detail);
  }
}

function refuse(reason: SignatureFailure, detail: string): never {
  throw new Refusal(reason, detail);
}

function profile(detail: string): never {
  refuse('signature_profile', detail);
}

/** Attacker-controlled text going into a detail string: one line, bounded. */
function quote(text: string, max = 80): string {
  const cut = text.length > max ? `${text.slice(0, max)}...` : text;
  return JSON.stringify(cut);
}

/** A trust configuration that cannot be used safely or makes no sense, said with how to fix it. */
export function signerTrustProblem(config: SignerTrustConfig): string | null {
  const constrained = config.signerCn.length > 0 || config.signerSubject.length > 0;
  if (config.signerCa.length > 0 && !constrained) {
    return (
      '--signer-ca needs an identity constraint: add --signer-cn NAME (the ANS signer: --signer-cn alb.mssante.fr) ' +
      "and/or --signer-subject DN. A CA alone would let every certificate it issues (every operator's TLS certificate) sign a list"
    );
  }
  if (constrained && config.signerCa.length === 0) {
    return '--signer-cn / --signer-subject constrain a CA-issued signer: give the CA with --signer-ca PEM (a pinned --signer needs no constraint)';
  }
  return null;
}

export function hasSignerTrust(config: SignerTrustConfig): boolean {
  return config.signer.length > 0 || config.signerCa.length > 0;
}

function readCertificates(flag: string, path: string): X509Certificate[] {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (error) {
    throw new Error(`${flag} ${path}: cannot read the file (${(error as Error).message})`, { cause: error });
  }
  const blocks = pem.match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new Error(`${flag} ${path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw new Error(`${flag} ${path}: certificate #${i + 1} is not a valid X.509 certificate (${(error as Error).message})`, {
        cause: error,
      });
    }
  });
}

/**
 * Reads and checks the configured trust; throws an Error saying what is wrong and how to fix it.
 * A plain list of paths means pinned signers (`--signer`).
 */
export function loadSignerTrust(input: SignerTrustConfig | readonly string[]): SignerTrust {
  const config: SignerTrustConfig = isPathList(input) ? { signer: input, signerCa: [], signerCn: [], signerSubject: [] } : input;
  const problem = signerTrustProblem(config);
  if (problem !== null) throw new Error(problem);
  const pins: TrustedCertificate[] = [];
  for (const path of config.signer) {
    readCertificates('--signer', path).forEach((certificate, i) => {
      const which = `--signer ${path}: certificate #${i + 1} (${oneLine(certificate.subject)})`;
      if (certificate.ca) {
        throw new Error(
          `${which} is a CA certificate (basicConstraints CA:TRUE); --signer pins the list signer's own certificate only. ` +
            'To trust a CA, use --signer-ca PEM with --signer-cn NAME (e.g. alb.mssante.fr) and/or --signer-subject DN',
        );
      }
      const usage = usageProblem(certificate);
      if (usage !== null) throw new Error(`${which} cannot sign a list: ${usage}`);
      pins.push({ path, certificate });
    });
  }
  const cas: TrustedCertificate[] = [];
  for (const path of config.signerCa) {
    readCertificates('--signer-ca', path).forEach((certificate, i) => {
      if (!certificate.ca) {
        throw new Error(
          `--signer-ca ${path}: certificate #${i + 1} (${oneLine(certificate.subject)}) is not a CA certificate (no basicConstraints CA:TRUE); ` +
            'pin a signer certificate with --signer PEM',
        );
      }
      cas.push({ path, certificate });
    });
  }
  const cns = config.signerCn.map((cn) => {
    const n = normaliseCn(cn.trim());
    if (n === '') throw new Error('--signer-cn: empty name');
    return n;
  });
  const subjects = config.signerSubject.map((text) => {
    const parsed = parseDn(text);
    if (!parsed.ok) throw new Error(`--signer-subject ${JSON.stringify(text)}: not a distinguished name (${parsed.error})`);
    return { text, key: parsed.dn.key };
  });
  return { pins, cas, cns, subjects };
}

function isPathList(input: SignerTrustConfig | readonly string[]): input is readonly string[] {
  return Array.isArray(input);
}

function usageProblem(certificate: X509Certificate): string | null {
  try {
    return signingUsageProblem(readCertificateUsage(certificate.raw));
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * Cheap test (no parse) used with --allow-unsigned: does the text carry an XMLDSig Signature start
 * tag? A false positive only means the list goes through verifyListSignature, which is strict.
 */
export function isSigned(xml: string): boolean {
  if (!xml.includes(DSIG)) return false;
  return /<(?:[A-Za-z_][\w.-]*:)?Signature[\s/>]/.test(xml);
}

export function verifyListSignature(xml: string, trust: SignerTrust): SignatureVerdict {
  try {
    return verify(xml, trust);
  } catch (error) {
    if (error instanceof Refusal) {
      return error.keyInfo === undefined
        ? { ok: false, reason: error.reason, detail: error.detail }
        : { ok: false, reason: error.reason, detail: error.detail, keyInfo: error.keyInfo };
    }
    // xml-crypto throws on node types it cannot canonicalise; anything unforeseen is refused too.
    return {
      ok: false,
      reason: 'signature_profile',
      detail: `verification failed: ${quote(String((error as Error)?.message ?? error), 160)}`,
    };
  }
}

function verify(xml: string, trust: SignerTrust): SignatureVerdict {
  if (typeof xml !== 'string' || xml.length === 0) refuse('xml_malformed', 'empty document');
  // Refused before parsing: no entity expansion, no internal subset, ever.
  if (/<!DOCTYPE/i.test(xml)) refuse('doctype_forbidden', 'the list declares a DOCTYPE; MSSante lists never do');

  // XML 1.0 end-of-line handling (CR LF and lone CR become LF), as libxml2 and fast-xml-parser do.
  // xmldom's default also folds U+0085/U+2028/U+2029 (XML 1.1): data to an XML 1.0 signer.
  // The locator's line numbers index this text.
  const text = xml.replace(/\r\n?/g, '\n');
  const doc = parse(text);
  const root = doc.documentElement;
  if (root === null) refuse('xml_malformed', 'no root element');
  checkProlog(doc);

  const signature = findSignature(root);
  const parts = readSignature(signature);
  checkSignedText(text, signature);

  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(parts.certificate);
  } catch (error) {
    profile(`KeyInfo X509Certificate is not a valid certificate (${(error as Error).message})`);
  }
  if (leaf.publicKey.asymmetricKeyType !== 'rsa')
    profile(`signer key is ${leaf.publicKey.asymmetricKeyType ?? 'unknown'}, not RSA`);

  const c14n = new ExclusiveCanonicalization();
  // Canonicalised in place, before the Signature leaves the tree (see signedInfoOptions).
  const signedInfoCanon = c14n.process(parts.signedInfo, signedInfoOptions(parts.signedInfo));

  // The enveloped-signature transform, then exc-c14n of the root. URI="" is the whole document; the
  // prolog holds no processing instruction (checkProlog), so its c14n is the root element's.
  root.removeChild(signature);
  const documentCanon = c14n.process(root, { defaultNsForPrefix: { ds: DSIG }, ancestorNamespaces: [] });
  const digest = createHash('sha256').update(documentCanon, 'utf8').digest();
  if (!timingSafeEqual(digest, parts.digest)) {
    refuse('signature_digest_mismatch', 'the signed content was modified: its SHA-256 differs from DigestValue');
  }

  const verifier = createVerify('RSA-SHA256');
  verifier.update(signedInfoCanon, 'utf8');
  if (!verifier.verify(leaf.publicKey, parts.signatureValue)) {
    refuse('signature_invalid', `SignatureValue does not verify with the KeyInfo certificate (${oneLine(leaf.subject)})`);
  }

  let trusted: ReturnType<typeof trustOf>;
  try {
    trusted = trustOf(leaf, trust);
  } catch (error) {
    if (error instanceof Refusal) error.keyInfo = keyInfoSigner(leaf);
    throw error;
  }
  const generatedAt = generationDate(root);
  for (const cert of [leaf, ...trusted.chain]) {
    const from = new Date(cert.validFrom);
    const to = new Date(cert.validTo);
    if (!(from.getTime() <= generatedAt.getTime() && generatedAt.getTime() <= to.getTime())) {
      refuse(
        'signer_not_valid_at_generation',
        `${cert === leaf ? 'signer' : 'issuing CA'} certificate ${oneLine(cert.subject)} is valid from ${from.toISOString()} to ${to.toISOString()}, ` +
          `not at the list's DateDeGeneration ${generatedAt.toISOString()}`,
      );
    }
  }

  return {
    ok: true,
    generatedAt,
    signer: {
      subject: oneLine(leaf.subject),
      issuer: oneLine(leaf.issuer),
      validFrom: new Date(leaf.validFrom).toISOString(),
      validTo: new Date(leaf.validTo).toISOString(),
      fingerprint256: leaf.fingerprint256,
      trustedBy: trusted.by,
      matched: trusted.matched,
      pem: leaf.toString(),
    },
  };
}

function parse(text: string): Document {
  try {
    const parser = new DOMParser({
      locator: true,
      normalizeLineEndings: (s: string) => s,
      // Warnings too: whatever xmldom had to guess, another parser may guess differently.
      onError: (level: string, message: string) => {
        throw new Refusal('xml_malformed', `not well-formed XML (${level}): ${quote(message, 160)}`);
      },
    });
    return parser.parseFromString(text, 'text/xml');
  } catch (error) {
    if (error instanceof Refusal) throw error;
    refuse('xml_malformed', `not well-formed XML: ${quote(String((error as Error)?.message ?? error), 160)}`);
  }
}

/** Outside the root: the XML declaration, comments and blanks only. */
function checkProlog(doc: Document): void {
  let first = true;
  for (let n: Node | null = doc.firstChild; n !== null; n = n.nextSibling, first = false) {
    switch (n.nodeType) {
      case ELEMENT_NODE:
      case COMMENT_NODE:
        break;
      case TEXT_NODE:
        if (!BLANK.test((n as unknown as { data: string }).data)) refuse('xml_malformed', 'text outside the root element');
        break;
      case PROCESSING_INSTRUCTION_NODE:
        // xmldom reports the XML declaration as a processing instruction named "xml".
        if (first && n.nodeName === 'xml') break;
        profile(`processing instruction <?${n.nodeName}?> outside the root element`);
      case DOCUMENT_TYPE_NODE:
        refuse('doctype_forbidden', 'the list declares a DOCTYPE; MSSante lists never do');
      default:
        refuse('xml_malformed', `unexpected node of type ${n.nodeType} outside the root element`);
    }
  }
}

/**
 * One walk over the whole tree: exactly one XMLDSig element tree, the Signature, last element child
 * of the root with only blanks after it; no processing instruction anywhere (xml-crypto's c14n would
 * render it as text, unlike the signer's).
 */
function findSignature(root: Element): Element {
  const signatures: Element[] = [];
  const stack: Node[] = [root];
  while (stack.length > 0) {
    const node = stack.pop() as Node;
    if (node.nodeType === PROCESSING_INSTRUCTION_NODE) profile(`processing instruction <?${node.nodeName}?> inside the list`);
    if (node.nodeType !== ELEMENT_NODE) continue;
    const el = node as Element;
    if (el.namespaceURI === DSIG) {
      if (el.localName !== 'Signature') profile(`XMLDSig element ${el.localName} outside a Signature`);
      signatures.push(el);
      continue; // its inside is checked by readSignature
    }
    for (let c = el.lastChild; c !== null; c = c.previousSibling) stack.push(c);
  }
  if (signatures.length === 0) refuse('signature_missing', 'the list holds no XMLDSig Signature element');
  if (signatures.length > 1) profile(`the list holds ${signatures.length} Signature elements; exactly one is allowed`);
  const signature = signatures[0] as Element;
  if (signature === root) profile('the Signature is the root element (not enveloped)');
  if (signature.parentNode !== root) profile('the Signature is not a child of the root element');

  for (let n = signature.nextSibling; n !== null; n = n.nextSibling) {
    if (n.nodeType !== TEXT_NODE || !BLANK.test((n as unknown as { data: string }).data)) {
      profile('content follows the Signature inside the root element; it must be the last child');
    }
  }
  // xml-crypto's exc-c14n reads InclusiveNamespaces from a CanonicalizationMethod child of the node it
  // canonicalises; the root must not offer one.
  for (let n = root.firstChild; n !== null; n = n.nextSibling) {
    if (n.nodeType === ELEMENT_NODE && (n as Element).localName === 'CanonicalizationMethod') {
      profile('a CanonicalizationMethod element is a child of the root');
    }
  }
  return signature;
}

interface SignatureParts {
  readonly signedInfo: Element;
  readonly digest: Buffer;
  readonly signatureValue: Buffer;
  readonly certificate: Buffer;
}

/** The exact ANS shape, element by element, attribute by attribute. */
function readSignature(signature: Element): SignatureParts {
  onlyAttributes(signature, {});
  const [signedInfo, signatureValue, keyInfo] = children(signature, ['SignedInfo', 'SignatureValue', 'KeyInfo']);

  onlyAttributes(signedInfo, {});
  const [canonicalization, signatureMethod, reference] = children(signedInfo, [
    'CanonicalizationMethod',
    'SignatureMethod',
    'Reference',
  ]);
  algorithm(canonicalization, EXC_C14N);
  algorithm(signatureMethod, RSA_SHA256);

  onlyAttributes(reference, { URI: '' });
  const [transforms, digestMethod, digestValue] = children(reference, ['Transforms', 'DigestMethod', 'DigestValue']);
  onlyAttributes(transforms, {});
  const [enveloped, exclusive] = children(transforms, ['Transform', 'Transform']);
  algorithm(enveloped, ENVELOPED);
  algorithm(exclusive, EXC_C14N);
  algorithm(digestMethod, SHA256);
  const digest = base64(digestValue);
  if (digest.length !== 32) profile(`DigestValue holds ${digest.length} bytes, not a SHA-256 digest`);

  onlyAttributes(signatureValue, {});
  const value = base64(signatureValue);

  onlyAttributes(keyInfo, {});
  const [x509Data] = children(keyInfo, ['X509Data']);
  onlyAttributes(x509Data, {});
  const [x509Certificate] = children(x509Data, ['X509Certificate']);
  onlyAttributes(x509Certificate, {});
  return { signedInfo, digest, signatureValue: value, certificate: base64(x509Certificate) };
}

/** Element children of `el`, which must be exactly `names` (XMLDSig namespace) with blanks between. */
function children<const N extends readonly string[]>(el: Element, names: N): { [K in keyof N]: Element } {
  const found: Element[] = [];
  for (let n = el.firstChild; n !== null; n = n.nextSibling) {
    if (n.nodeType === ELEMENT_NODE) {
      found.push(n as Element);
    } else if (n.nodeType !== TEXT_NODE || !BLANK.test((n as unknown as { data: string }).data)) {
      profile(`unexpected ${nodeKind(n)} inside ${el.localName}`);
    }
  }
  const got = found.map((c) => (c.namespaceURI === DSIG ? c.localName : `{${c.namespaceURI ?? ''}}${c.localName}`));
  if (got.length !== names.length || got.some((name, i) => name !== names[i])) {
    profile(`${el.localName} must hold exactly ${names.join(', ')}; found ${got.join(', ') || 'nothing'}`);
  }
  return found as { [K in keyof N]: Element };
}

function algorithm(el: Element, expected: string): void {
  onlyAttributes(el, { Algorithm: expected });
  children(el, []);
}

/** Only namespace declarations and the listed attributes, with exactly the listed values. */
function onlyAttributes(el: Element, expected: Readonly<Record<string, string>>): void {
  const seen = new Set<string>();
  for (let i = 0; i < el.attributes.length; i++) {
    const attr = el.attributes.item(i);
    if (attr === null || attr.namespaceURI === XMLNS) continue;
    const want = attr.namespaceURI === null ? expected[attr.name] : undefined;
    if (want === undefined) profile(`unexpected attribute ${quote(attr.name)} on ${el.localName}`);
    if (attr.value !== want)
      profile(`${el.localName} ${attr.name}=${quote(attr.value, 120)}; only ${quote(want, 120)} is accepted`);
    seen.add(attr.name);
  }
  for (const name of Object.keys(expected)) {
    if (!seen.has(name)) profile(`${el.localName} lacks its ${name} attribute`);
  }
}

/** xs:base64Binary text (the ANS writes `&#13;` line breaks, decoded here to CR). */
function base64(el: Element): Buffer {
  let value = '';
  for (let n = el.firstChild; n !== null; n = n.nextSibling) {
    if (n.nodeType !== TEXT_NODE) profile(`unexpected ${nodeKind(n)} inside ${el.localName}`);
    value += (n as unknown as { data: string }).data;
  }
  const compact = value.replace(/[ \t\r\n]+/g, '');
  if (compact.length === 0 || !BASE64.test(compact)) profile(`${el.localName} is not base64`);
  return Buffer.from(compact, 'base64');
}

function nodeKind(n: Node): string {
  switch (n.nodeType) {
    case TEXT_NODE:
      return 'text';
    case CDATA_SECTION_NODE:
      return 'CDATA section';
    case COMMENT_NODE:
      return 'comment';
    case PROCESSING_INSTRUCTION_NODE:
      return 'processing instruction';
    default:
      return `node of type ${n.nodeType}`;
  }
}

/**
 * The caller parses the same string with a generic parser (fast-xml-parser), which leaves numeric
 * character references undecoded where xmldom (and so the digest) decodes them: `&#101;vil.fr` and
 * `evil.fr` have one canonical form but two readings. The signed content (everything before the
 * Signature) may only use `&#13;`/`&#xD;`, the one character no document can write literally.
 */
function checkSignedText(text: string, signature: Element): void {
  const line = signature.lineNumber;
  const column = signature.columnNumber;
  if (line === undefined || column === undefined) profile('cannot locate the Signature in the text');
  let offset = 0;
  for (let l = 1; l < line; l++) {
    offset = text.indexOf('\n', offset) + 1;
    if (offset === 0) profile('cannot locate the Signature in the text');
  }
  offset += column - 1;
  if (text.charCodeAt(offset) !== 0x3c || !text.startsWith(signature.tagName, offset + 1)) {
    profile('cannot locate the Signature in the text');
  }
  for (let i = text.indexOf('&#'); i !== -1 && i < offset; i = text.indexOf('&#', i + 2)) {
    const ref = /^&#(?:13|x[dD]);/.exec(text.slice(i, i + 8));
    if (ref === null) {
      profile(`numeric character reference ${quote(text.slice(i, i + 10))} in the signed content (readers would disagree on it)`);
    }
  }
}

/**
 * Namespaces in scope at SignedInfo, nearest declaration first, as xml-crypto collects them for
 * checkSignature(). exc-c14n only uses them for an InclusiveNamespaces PrefixList, which this profile
 * refuses; every visibly used namespace is rendered from the node itself.
 */
function signedInfoOptions(signedInfo: Element): {
  defaultNsForPrefix: Record<string, string>;
  ancestorNamespaces: Array<{ prefix: string; namespaceURI: string }>;
} {
  const ancestorNamespaces: Array<{ prefix: string; namespaceURI: string }> = [];
  const seen = new Set<string>();
  for (let n = signedInfo.parentNode; n !== null && n.nodeType === ELEMENT_NODE; n = n.parentNode) {
    const el = n as Element;
    for (let i = 0; i < el.attributes.length; i++) {
      const attr = el.attributes.item(i);
      const prefix = attr?.prefix === 'xmlns' ? attr.localName : null;
      if (attr === null || prefix === null || seen.has(prefix)) continue;
      seen.add(prefix);
      if (attr.value !== '') ancestorNamespaces.push({ prefix, namespaceURI: attr.value });
    }
  }
  return { defaultNsForPrefix: { ds: DSIG }, ancestorNamespaces };
}

/**
 * A pinned leaf, or a leaf issued by a configured CA certificate (which may be an intermediate) and
 * carrying a configured identity; either way a certificate meant for signing.
 */
function trustOf(leaf: X509Certificate, trust: SignerTrust): { by: 'pinned' | 'ca'; matched: string; chain: X509Certificate[] } {
  if (trust.pins.length === 0 && trust.cas.length === 0)
    refuse('signer_untrusted', 'no trusted signer is configured (--signer, or --signer-ca with --signer-cn)');
  const describe = `signer ${oneLine(leaf.subject)} (issuer ${oneLine(leaf.issuer)}, SHA-256 ${leaf.fingerprint256})`;
  let found: { by: 'pinned' | 'ca'; matched: string; chain: X509Certificate[] };
  const pin = trust.pins.find((p) => p.certificate.raw.equals(leaf.raw));
  if (pin !== undefined) {
    found = { by: 'pinned', matched: `pinned signer ${pin.path}`, chain: [] };
  } else {
    // The first configured CA that issued the leaf is the anchor: the operator trusts what it
    // configured, and KeyInfo carries no intermediates to go further with.
    const ca = trust.cas.find((c) => leaf.checkIssued(c.certificate) && leaf.verify(c.certificate.publicKey));
    if (ca === undefined) {
      const modes = [
        trust.pins.length > 0 ? 'a pinned --signer' : null,
        trust.cas.length > 0 ? 'issued by a --signer-ca certificate' : null,
      ].filter((m) => m !== null);
      refuse('signer_untrusted', `${describe} is not ${modes.join(', nor ')}`);
    }
    const identity = signerIdentity(leaf);
    const cnMatch = identity.cn !== null && trust.cns.includes(identity.cn) ? `--signer-cn ${identity.cn}` : null;
    const subjectMatch = identity.key === null ? undefined : trust.subjects.find((s) => s.key === identity.key);
    const constraint = cnMatch ?? (subjectMatch !== undefined ? `--signer-subject ${subjectMatch.text}` : null);
    if (constraint === null) {
      const wanted = [...trust.cns.map((cn) => `CN ${cn}`), ...trust.subjects.map((s) => `subject ${s.text}`)].join(' or ');
      refuse('signer_constraint', `${describe} is issued by --signer-ca ${ca.path} but is not the configured signer (${wanted})`);
    }
    found = {
      by: 'ca',
      matched: `CA ${oneLine(ca.certificate.subject)} (--signer-ca ${ca.path}) + ${constraint}`,
      chain: [ca.certificate],
    };
  }
  if (leaf.ca) refuse('signer_key_usage', `${describe} is a CA certificate, not a list signer`);
  const usage = usageProblem(leaf);
  if (usage !== null) refuse('signer_key_usage', `${describe} cannot sign a list: ${usage}`);
  return found;
}

function keyInfoSigner(leaf: X509Certificate): KeyInfoSigner {
  return {
    subject: oneLine(leaf.subject),
    issuer: oneLine(leaf.issuer),
    validFrom: new Date(leaf.validFrom).toISOString(),
    validTo: new Date(leaf.validTo).toISOString(),
    fingerprint256: leaf.fingerprint256,
    pem: leaf.toString(),
  };
}

/** The leaf's CN (exactly one, else none) and subject key, from node's RFC 2253-escaped rendering. */
function signerIdentity(leaf: X509Certificate): { cn: string | null; key: string | null } {
  const parsed = parseDn(leaf.subject.split('\n').join(','));
  if (!parsed.ok) return { cn: null, key: null };
  const cns = parsed.dn.rdns.flat().filter((ava) => ava.type === 'CN');
  return { cn: cns.length === 1 ? (cns[0]?.value ?? null) : null, key: parsed.dn.key };
}

/** DateDeGeneration: one child of the root, in the root's namespace; covered by the digest. */
function generationDate(root: Element): Date {
  const found: Element[] = [];
  for (let n = root.firstChild; n !== null; n = n.nextSibling) {
    if (n.nodeType === ELEMENT_NODE && (n as Element).localName === 'DateDeGeneration') found.push(n as Element);
  }
  if (found.length !== 1)
    refuse('generation_date_invalid', `the list holds ${found.length} DateDeGeneration elements; exactly one is expected`);
  const el = found[0] as Element;
  if (el.namespaceURI !== root.namespaceURI) refuse('generation_date_invalid', 'DateDeGeneration is not in the list namespace');
  for (let n = el.firstChild; n !== null; n = n.nextSibling) {
    if (n.nodeType === ELEMENT_NODE) refuse('generation_date_invalid', 'DateDeGeneration holds elements');
  }
  const value = (el.textContent ?? '').trim();
  const m = ISO_UTC.exec(value);
  const date = new Date(value);
  // The round trip rejects dates such as 2025-02-30 that Date would roll over.
  if (m === null || Number.isNaN(date.getTime()) || date.toISOString() !== `${value.slice(0, 19)}.000Z`) {
    refuse('generation_date_invalid', `DateDeGeneration ${quote(value, 40)} is not YYYY-MM-DDTHH:MM:SSZ`);
  }
  return date;
}

/** Node renders a subject as one attribute per line; a report wants one line. */
function oneLine(name: string): string {
  return name.split('\n').join(', ');
}
