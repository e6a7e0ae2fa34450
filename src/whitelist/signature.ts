/**
 * Who may sign the ANS whitelist, as configured (--signer, --signer-ca + --signer-cn/--signer-subject),
 * and the judgement of the KeyInfo certificate of a list whose signature verified: trusted, meant for
 * signing, valid at the list's DateDeGeneration. The XMLDSig verification itself is in xmldsig.ts
 * (libxml2): this module stays free of it, so that the daemon's main thread, which reads the
 * configuration, never loads WebAssembly.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { LoadFailureAt } from './failures.js';
import { normaliseCn, parseDn } from '../trust/dn.js';
import { readCertificateUsage, signingUsageProblem } from './x509-usage.js';

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

export const DSIG = 'http://www.w3.org/2000/09/xmldsig#';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

export class SignatureRefusal extends Error {
  keyInfo?: KeyInfoSigner;
  constructor(
    readonly reason: SignatureFailure,
    readonly detail: string,
  ) {
    super(detail);
  }
}

export function refuseSignature(reason: SignatureFailure, detail: string): never {
  throw new SignatureRefusal(reason, detail);
}

export function refuseProfile(detail: string): never {
  refuseSignature('signature_profile', detail);
}

/** Attacker-controlled text going into a detail string: one line, bounded. */
export function quote(text: string, max = 80): string {
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
 * A pinned leaf, or a leaf issued by a configured CA certificate (which may be an intermediate) and
 * carrying a configured identity; either way a certificate meant for signing.
 */
function trustOf(leaf: X509Certificate, trust: SignerTrust): { by: 'pinned' | 'ca'; matched: string; chain: X509Certificate[] } {
  if (trust.pins.length === 0 && trust.cas.length === 0)
    refuseSignature('signer_untrusted', 'no trusted signer is configured (--signer, or --signer-ca with --signer-cn)');
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
      refuseSignature('signer_untrusted', `${describe} is not ${modes.join(', nor ')}`);
    }
    const identity = signerIdentity(leaf);
    const cnMatch = identity.cn !== null && trust.cns.includes(identity.cn) ? `--signer-cn ${identity.cn}` : null;
    const subjectMatch = identity.key === null ? undefined : trust.subjects.find((s) => s.key === identity.key);
    const constraint = cnMatch ?? (subjectMatch !== undefined ? `--signer-subject ${subjectMatch.text}` : null);
    if (constraint === null) {
      const wanted = [...trust.cns.map((cn) => `CN ${cn}`), ...trust.subjects.map((s) => `subject ${s.text}`)].join(' or ');
      refuseSignature(
        'signer_constraint',
        `${describe} is issued by --signer-ca ${ca.path} but is not the configured signer (${wanted})`,
      );
    }
    found = {
      by: 'ca',
      matched: `CA ${oneLine(ca.certificate.subject)} (--signer-ca ${ca.path}) + ${constraint}`,
      chain: [ca.certificate],
    };
  }
  if (leaf.ca) refuseSignature('signer_key_usage', `${describe} is a CA certificate, not a list signer`);
  const usage = usageProblem(leaf);
  if (usage !== null) refuseSignature('signer_key_usage', `${describe} cannot sign a list: ${usage}`);
  return found;
}

/**
 * The KeyInfo leaf of a list whose digest and SignatureValue verified: trusted (pinned, or issued by a
 * configured CA and carrying a configured identity), meant for signing, and valid — with its CA — at
 * the list's DateDeGeneration (covered by the signature), not at "now". Throws SignatureRefusal.
 */
export function judgeSigner(leaf: X509Certificate, trust: SignerTrust, generationDate: () => Date): SignerInfo {
  let trusted: ReturnType<typeof trustOf>;
  try {
    trusted = trustOf(leaf, trust);
  } catch (error) {
    if (error instanceof SignatureRefusal) error.keyInfo = keyInfoSigner(leaf);
    throw error;
  }
  // Read only once the signer is trusted: a list from an unknown signer says so first.
  const generatedAt = generationDate();
  for (const cert of [leaf, ...trusted.chain]) {
    const from = new Date(cert.validFrom);
    const to = new Date(cert.validTo);
    if (!(from.getTime() <= generatedAt.getTime() && generatedAt.getTime() <= to.getTime())) {
      refuseSignature(
        'signer_not_valid_at_generation',
        `${cert === leaf ? 'signer' : 'issuing CA'} certificate ${oneLine(cert.subject)} is valid from ${from.toISOString()} to ${to.toISOString()}, ` +
          `not at the list's DateDeGeneration ${generatedAt.toISOString()}`,
      );
    }
  }
  return {
    subject: oneLine(leaf.subject),
    issuer: oneLine(leaf.issuer),
    validFrom: new Date(leaf.validFrom).toISOString(),
    validTo: new Date(leaf.validTo).toISOString(),
    fingerprint256: leaf.fingerprint256,
    trustedBy: trusted.by,
    matched: trusted.matched,
    pem: leaf.toString(),
  };
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

/** Node renders a subject as one attribute per line; a report wants one line. */
export function oneLine(name: string): string {
  return name.split('\n').join(', ');
}
