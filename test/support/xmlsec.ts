/**
 * An independent signer for tests: xmlsec1 (libxmlsec1, OpenSSL) signs lists with the exact ANS
 * profile, so the verifier is checked against another implementation, not against itself.
 * Also builds unsigned lists in the real file's format (docs/mssante-rules.md §2).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const LIST_NS = 'https://listeblanche.mssante.fr/schema';
export const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#';

export interface SignerFiles {
  readonly keyPath: string;
  readonly certPath: string;
}

export interface TemplateOptions {
  /** Element prefix for the Signature tree ('' = default namespace declared on Signature, as the ANS does). */
  readonly prefix?: string;
  /** Declare the prefix on Signature (default) or leave it to an ancestor. */
  readonly declareNamespace?: boolean;
  readonly signatureMethod?: string;
  readonly digestMethod?: string;
  readonly referenceUri?: string;
  readonly transforms?: readonly string[];
}

export const ALGORITHMS = {
  excC14n: 'http://www.w3.org/2001/10/xml-exc-c14n#',
  c14n: 'http://www.w3.org/TR/2001/REC-xml-c14n-20010315',
  enveloped: 'http://www.w3.org/2000/09/xmldsig#enveloped-signature',
  rsaSha256: 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',
  rsaSha1: 'http://www.w3.org/2000/09/xmldsig#rsa-sha1',
  sha256: 'http://www.w3.org/2001/04/xmlenc#sha256',
  sha1: 'http://www.w3.org/2000/09/xmldsig#sha1',
} as const;

export function xmlsecAvailable(): boolean {
  return spawnSync('xmlsec1', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** The empty Signature template; defaults are the ANS profile. */
export function signatureTemplate(options: TemplateOptions = {}): string {
  const p = options.prefix ? `${options.prefix}:` : '';
  const xmlns = options.declareNamespace === false ? '' : ` xmlns${options.prefix ? `:${options.prefix}` : ''}="${DSIG_NS}"`;
  const transforms = options.transforms ?? [ALGORITHMS.enveloped, ALGORITHMS.excC14n];
  return (
    `<${p}Signature${xmlns}><${p}SignedInfo>` +
    `<${p}CanonicalizationMethod Algorithm="${ALGORITHMS.excC14n}"/>` +
    `<${p}SignatureMethod Algorithm="${options.signatureMethod ?? ALGORITHMS.rsaSha256}"/>` +
    `<${p}Reference URI="${options.referenceUri ?? ''}"><${p}Transforms>` +
    transforms.map((a) => `<${p}Transform Algorithm="${a}"/>`).join('') +
    `</${p}Transforms><${p}DigestMethod Algorithm="${options.digestMethod ?? ALGORITHMS.sha256}"/>` +
    `<${p}DigestValue/></${p}Reference></${p}SignedInfo><${p}SignatureValue/>` +
    `<${p}KeyInfo><${p}X509Data><${p}X509Certificate/></${p}X509Data></${p}KeyInfo></${p}Signature>`
  );
}

/** Puts the template as the last child of the root element (before its end tag). */
export function withTemplate(unsignedXml: string, template: string): string {
  const end = unsignedXml.lastIndexOf('</');
  if (end < 0) throw new Error('withTemplate: no root end tag');
  return `${unsignedXml.slice(0, end)}${template}${unsignedXml.slice(end)}`;
}

/** Runs `xmlsec1 --sign` on a document that already holds its Signature template. */
export function signTemplate(xmlWithTemplate: string, signer: SignerFiles, extraArgs: readonly string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'mssante-xmlsec-'));
  try {
    const input = join(dir, 'in.xml');
    const output = join(dir, 'out.xml');
    writeFileSync(input, xmlWithTemplate);
    execFileSync(
      'xmlsec1',
      ['--sign', '--privkey-pem', `${signer.keyPath},${signer.certPath}`, ...extraArgs, '--output', output, input],
      { stdio: 'pipe' },
    );
    return readFileSync(output, 'utf8');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The unsigned list signed with the exact ANS profile. */
export function signList(unsignedXml: string, signer: SignerFiles): string {
  return signTemplate(withTemplate(unsignedXml, signatureTemplate()), signer);
}

function escapeText(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** An unsigned list in the real file's layout (same declaration, namespace, indentation, fields). */
export function buildListXml(
  entries: ReadonlyArray<{ nom: string; dn: string; description?: string }>,
  generatedAt: string,
): string {
  const domaines = entries.map((e) =>
    [
      '        <Domaine>',
      `            <Nom>${escapeText(e.nom)}</Nom>`,
      `            <Description>${escapeText(e.description ?? `Domaine de messagerie MSSanté ${e.nom}`)}</Description>`,
      `            <DNCertificatOperateur>${escapeText(e.dn)}</DNCertificatOperateur>`,
      `            <ResponsableContact>01 02 03 04 05, responsable@${escapeText(e.nom)}</ResponsableContact>`,
      `            <SupportContact>01 02 03 04 06, support@${escapeText(e.nom)}</SupportContact>`,
      `            <DateMAJ>${escapeText(generatedAt)}</DateMAJ>`,
      '        </Domaine>',
    ].join('\n'),
  );
  return (
    `<?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="${LIST_NS}">\n` +
    `    <DateDeGeneration>${escapeText(generatedAt)}</DateDeGeneration>\n` +
    '    <ListeDomaines>\n' +
    (domaines.length > 0 ? `${domaines.join('\n')}\n` : '') +
    '    </ListeDomaines>\n' +
    '</ListeBlancheMSSante>'
  );
}
