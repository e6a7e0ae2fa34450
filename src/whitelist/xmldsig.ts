/**
 * XMLDSig verification of the ANS whitelist on its libxml2 tree, restricted to the one profile the
 * ANS uses (docs/mssante-rules.md §2): enveloped signature, last child of the root, exclusive C14N without
 * comments, RSA-SHA256, SHA-256, one Reference URI="", KeyInfo = the signer's leaf certificate.
 * Anything else is refused, which closes the signature-wrapping family of attacks.
 *
 * Canonicalisation is libxml2's own (xmlC14NExecute, exclusive mode, through libxml2-wasm), never
 * ours; SHA-256 and RSA are Node's. Pure and synchronous: the daemon calls it in its list worker.
 */
import { createHash, createVerify, timingSafeEqual, X509Certificate, type Hash } from 'node:crypto';
import {
  XmlC14NMode,
  XmlCData,
  XmlComment,
  XmlElement,
  XmlText,
  type C14NOptions,
  type XmlDocument,
  type XmlNode,
  type XmlOutputBufferHandler,
  type XmlTreeNode,
} from 'libxml2-wasm';
import {
  DSIG,
  judgeSigner,
  oneLine,
  quote,
  refuseProfile as profile,
  refuseSignature as refuse,
  SignatureRefusal,
  type SignatureVerdict,
  type SignerTrust,
} from './signature.js';
import { GENERATION_DATE } from './generation-date.js';
import { numericCharacterReference } from './list-bytes.js';
import { parseListDocument } from './xml.js';

const EXC_C14N = 'http://www.w3.org/2001/10/xml-exc-c14n#';
const ENVELOPED = 'http://www.w3.org/2000/09/xmldsig#enveloped-signature';
const RSA_SHA256 = 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256';
const SHA256 = 'http://www.w3.org/2001/04/xmlenc#sha256';

const BLANK = /^[ \t\r\n]*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Every XMLDSig element (a name test: libxml2 answers it without a function call per element). */
const DSIG_ELEMENTS = '//ds:*';

/**
 * Parses the list and verifies its signature; the tree is disposed before returning. prepareList()
 * parses once and calls verifyDocumentSignature() on the tree it then reads the entries from.
 */
export function verifyListSignature(xml: string | Uint8Array, trust: SignerTrust): SignatureVerdict {
  const bytes = typeof xml === 'string' ? Buffer.from(xml, 'utf8') : xml;
  const parsed = parseListDocument(bytes);
  if (!parsed.ok) return { ok: false, reason: parsed.reason, detail: parsed.detail };
  try {
    return verifyDocumentSignature(parsed.document, bytes, trust);
  } finally {
    parsed.document.dispose();
  }
}

/**
 * Verifies the signature of a parsed list (`bytes`: what it was parsed from). The Signature
 * element is removed from the tree on the way (the enveloped-signature transform); the rest of the
 * tree is left as parsed, for the entries.
 */
export function verifyDocumentSignature(document: XmlDocument, bytes: Uint8Array, trust: SignerTrust): SignatureVerdict {
  try {
    return verify(document, bytes, trust);
  } catch (error) {
    if (error instanceof SignatureRefusal) {
      return error.keyInfo === undefined
        ? { ok: false, reason: error.reason, detail: error.detail }
        : { ok: false, reason: error.reason, detail: error.detail, keyInfo: error.keyInfo };
    }
    // Anything unforeseen (a libxml2 error while canonicalising) is refused too.
    return {
      ok: false,
      reason: 'signature_profile',
      detail: `verification failed: ${quote(String((error as Error)?.message ?? error), 160)}`,
    };
  }
}

function verify(document: XmlDocument, bytes: Uint8Array, trust: SignerTrust): SignatureVerdict {
  const root = document.root;
  checkNoProcessingInstruction(document);
  const signature = findSignature(document, root);
  const parts = readSignature(signature);
  checkCharacterReferences(bytes);

  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(parts.certificate);
  } catch (error) {
    profile(`KeyInfo X509Certificate is not a valid certificate (${(error as Error).message})`);
  }
  if (leaf.publicKey.asymmetricKeyType !== 'rsa')
    profile(`signer key is ${leaf.publicKey.asymmetricKeyType ?? 'unknown'}, not RSA`);

  // The Transforms and the CanonicalizationMethod carry no InclusiveNamespaces (readSignature
  // refuses any child): exclusive C14N with an empty prefix list, as they say.
  const c14n: C14NOptions = { mode: XmlC14NMode.XML_C14N_EXCLUSIVE_1_0, withComments: false, inclusiveNamespacePrefixes: [] };

  // SignedInfo: libxml2 filters the tree down to its subtree (the node set of the XMLDSig spec),
  // with the namespaces it inherits from the Signature and the root.
  const signedInfo = new ChunkCollector();
  document.canonicalize(signedInfo, { ...c14n, nodeSet: new Set<XmlNode>([parts.signedInfo]) });

  // The enveloped-signature transform removes the Signature element; then exc-c14n of the whole
  // document (URI=""). Taking it out of the tree gives libxml2 the same node set as a visibility
  // filter, at a tenth of the cost (no call back into JavaScript per node).
  signature.remove();
  const digest = new HashSink(createHash('sha256'));
  document.canonicalize(digest, c14n);
  if (!timingSafeEqual(digest.digest(), parts.digest)) {
    refuse('signature_digest_mismatch', 'the signed content was modified: its SHA-256 differs from DigestValue');
  }

  const verifier = createVerify('RSA-SHA256');
  verifier.update(signedInfo.bytes());
  if (!verifier.verify(leaf.publicKey, parts.signatureValue)) {
    refuse('signature_invalid', `SignatureValue does not verify with the KeyInfo certificate (${oneLine(leaf.subject)})`);
  }

  let generatedAt = new Date(NaN);
  const signer = judgeSigner(leaf, trust, () => (generatedAt = generationDate(root)));
  return { ok: true, generatedAt, signer };
}

class HashSink implements XmlOutputBufferHandler {
  constructor(private readonly hash: Hash) {}
  write(buf: Uint8Array): number {
    this.hash.update(buf);
    return buf.byteLength;
  }
  close(): boolean {
    return true;
  }
  digest(): Buffer {
    return this.hash.digest();
  }
}

class ChunkCollector implements XmlOutputBufferHandler {
  private readonly chunks: Buffer[] = [];
  write(buf: Uint8Array): number {
    // `buf` is a view of WebAssembly memory, valid during the call only.
    this.chunks.push(Buffer.from(buf));
    return buf.byteLength;
  }
  close(): boolean {
    return true;
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/**
 * No processing instruction anywhere (the XML declaration is not one for libxml2): the ANS writes
 * none, and a reader that kept one as text would see another document than the signer.
 */
function checkNoProcessingInstruction(document: XmlDocument): void {
  const count = document.eval('count(//processing-instruction())');
  if (typeof count === 'number' && count > 0) {
    const found = document.eval('name((//processing-instruction())[1])');
    const name = typeof found === 'string' ? found : '';
    const inside = document.eval('boolean((//processing-instruction())[1]/ancestor::*)') === true;
    profile(`processing instruction <?${name}?> ${inside ? 'inside the list' : 'outside the root element'}`);
  }
}

/**
 * Exactly one XMLDSig element tree, the Signature, last element child of the root with only blanks
 * after it.
 */
function findSignature(document: XmlDocument, root: XmlElement): XmlElement {
  // The top-level ones (not inside another XMLDSig element): exactly one, the Signature, is allowed.
  const top = document.find(DSIG_ELEMENTS, { ds: DSIG }).filter((n): n is XmlElement => {
    if (!(n instanceof XmlElement)) return false;
    const parent = n.parent;
    return parent === null || parent.namespaceUri !== DSIG;
  });
  const stray = top.find((el) => el.name !== 'Signature');
  if (stray !== undefined) profile(`XMLDSig element ${stray.name} outside a Signature`);
  if (top.length === 0) refuse('signature_missing', 'the list holds no XMLDSig Signature element');
  if (top.length > 1) profile(`the list holds ${top.length} Signature elements; exactly one is allowed`);
  const signature = top[0] as XmlElement;
  if (signature.isSameNode(root)) profile('the Signature is the root element (not enveloped)');
  const parent = signature.parent;
  if (parent === null || !parent.isSameNode(root)) profile('the Signature is not a child of the root element');

  for (let n: XmlTreeNode | null = signature.next; n !== null; n = n.next) {
    if (!(n instanceof XmlText) || !BLANK.test(n.content)) {
      profile('content follows the Signature inside the root element; it must be the last child');
    }
  }
  // Kept from the first verifier (its canonicaliser read InclusiveNamespaces there): the ANS root
  // has no such child, and one would only serve to confuse a reader.
  for (let n: XmlTreeNode | null = root.firstChild; n !== null; n = n.next) {
    if (n instanceof XmlElement && n.name === 'CanonicalizationMethod') {
      profile('a CanonicalizationMethod element is a child of the root');
    }
  }
  return signature;
}

interface SignatureParts {
  readonly signedInfo: XmlElement;
  readonly digest: Buffer;
  readonly signatureValue: Buffer;
  readonly certificate: Buffer;
}

/** The exact ANS shape, element by element, attribute by attribute. */
function readSignature(signature: XmlElement): SignatureParts {
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
function children<const N extends readonly string[]>(el: XmlElement, names: N): { [K in keyof N]: XmlElement } {
  const found: XmlElement[] = [];
  for (let n: XmlTreeNode | null = el.firstChild; n !== null; n = n.next) {
    if (n instanceof XmlElement) {
      found.push(n);
    } else if (!(n instanceof XmlText) || !BLANK.test(n.content)) {
      profile(`unexpected ${nodeKind(n)} inside ${el.name}`);
    }
  }
  const got = found.map((c) => (c.namespaceUri === DSIG ? c.name : `{${c.namespaceUri}}${c.name}`));
  if (got.length !== names.length || got.some((name, i) => name !== names[i])) {
    profile(`${el.name} must hold exactly ${names.join(', ')}; found ${got.join(', ') || 'nothing'}`);
  }
  return found as { [K in keyof N]: XmlElement };
}

function algorithm(el: XmlElement, expected: string): void {
  onlyAttributes(el, { Algorithm: expected });
  children(el, []);
}

/** Only namespace declarations (not attributes for libxml2) and the listed attributes, with exactly the listed values. */
function onlyAttributes(el: XmlElement, expected: Readonly<Record<string, string>>): void {
  const seen = new Set<string>();
  for (const attr of el.attrs) {
    const namespace = attr.namespaceUri;
    const name = namespace === '' ? attr.name : `${attr.prefix}:${attr.name}`;
    const want = namespace === '' ? expected[attr.name] : undefined;
    if (want === undefined) profile(`unexpected attribute ${quote(name)} on ${el.name}`);
    const value = attr.value;
    if (value !== want) profile(`${el.name} ${name}=${quote(value, 120)}; only ${quote(want, 120)} is accepted`);
    seen.add(name);
  }
  for (const name of Object.keys(expected)) {
    if (!seen.has(name)) profile(`${el.name} lacks its ${name} attribute`);
  }
}

/** xs:base64Binary text (the ANS writes `&#13;` line breaks, decoded here to CR). */
function base64(el: XmlElement): Buffer {
  let value = '';
  for (let n: XmlTreeNode | null = el.firstChild; n !== null; n = n.next) {
    if (!(n instanceof XmlText)) profile(`unexpected ${nodeKind(n)} inside ${el.name}`);
    value += n.content;
  }
  const compact = value.replace(/[ \t\r\n]+/g, '');
  if (compact.length === 0 || !BASE64.test(compact)) profile(`${el.name} is not base64`);
  return Buffer.from(compact, 'base64');
}

function nodeKind(n: XmlNode): string {
  if (n instanceof XmlText) return 'text';
  if (n instanceof XmlCData) return 'CDATA section';
  if (n instanceof XmlComment) return 'comment';
  return 'node';
}

/**
 * The ANS writes one numeric character reference, `&#13;`; any other one is refused, anywhere
 * (list-bytes.ts, numericCharacterReference).
 */
function checkCharacterReferences(bytes: Uint8Array): void {
  const found = numericCharacterReference(bytes);
  if (found !== null) profile(found);
}

/** DateDeGeneration: one child of the root, in the root's namespace; covered by the digest. */
function generationDate(root: XmlElement): Date {
  const found: XmlElement[] = [];
  for (let n: XmlTreeNode | null = root.firstChild; n !== null; n = n.next) {
    if (n instanceof XmlElement && n.name === 'DateDeGeneration') found.push(n);
  }
  if (found.length !== 1)
    refuse('generation_date_invalid', `the list holds ${found.length} DateDeGeneration elements; exactly one is expected`);
  const el = found[0] as XmlElement;
  if (el.namespaceUri !== root.namespaceUri) refuse('generation_date_invalid', 'DateDeGeneration is not in the list namespace');
  for (let n: XmlTreeNode | null = el.firstChild; n !== null; n = n.next) {
    if (n instanceof XmlElement) refuse('generation_date_invalid', 'DateDeGeneration holds elements');
  }
  const value = el.content.trim();
  const m = GENERATION_DATE.exec(value);
  const date = new Date(value);
  // The round trip rejects dates such as 2025-02-30 that Date would roll over.
  if (m === null || Number.isNaN(date.getTime()) || date.toISOString() !== `${value.slice(0, 19)}.000Z`) {
    refuse('generation_date_invalid', `DateDeGeneration ${quote(value, 40)} is not YYYY-MM-DDTHH:MM:SSZ`);
  }
  return date;
}
