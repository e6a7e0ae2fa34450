/**
 * A throw-away test PKI made by openssl (an independent tool): an IGC-Santé-like CA, operators'
 * TLS client/server certificates, and list signers — with explicit validity windows so that
 * "expired now but valid when the list was generated" can be tested.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  readonly name: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly certPem: string;
  readonly keyPem: string;
  /** Subject in the list's writing: CN first, comma separated (RFC 2253 order). */
  readonly subjectRfc2253: string;
}

export type Usage = 'ca' | 'client' | 'server' | 'tls' | 'signing' | 'encipherment' | 'no-extensions';

export interface IssueOptions {
  readonly usage: Usage;
  /** openssl -startdate / -enddate form: YYYYMMDDHHMMSSZ. Default: now-1d .. now+365d. */
  readonly notBefore?: string;
  readonly notAfter?: string;
  readonly dnsNames?: readonly string[];
  /**
   * The key: RSA 2048 (default, what the ANS and IGC-Santé use) or EC P-256, generated in a fraction
   * of the time, for tests where only the certificate's other fields matter.
   */
  readonly keyType?: 'rsa' | 'ec';
}

/** Subject as ordered (type, value) pairs, in certificate order (C first). */
export type Subject = ReadonlyArray<readonly [string, string]>;

export function subjectRfc2253(subject: Subject): string {
  return [...subject]
    .reverse()
    .map(([t, v]) => `${t}=${v}`)
    .join(',');
}

function subjectSlash(subject: Subject): string {
  return subject.map(([t, v]) => `/${t}=${v.replace(/[/\\]/g, (c) => `\\${c}`)}`).join('');
}

export function opensslDate(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
}

const EXTENSIONS: Record<Usage, string> = {
  ca: 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash',
  client: 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth',
  server: 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth',
  tls: 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth',
  signing: 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\nextendedKeyUsage=emailProtection',
  /** Not a signing key: key usage without digitalSignature or nonRepudiation. */
  encipherment: 'basicConstraints=CA:FALSE\nkeyUsage=critical,keyEncipherment,dataEncipherment\nextendedKeyUsage=emailProtection',
  /** No key usage and no extended key usage extension: any use allowed. */
  'no-extensions': 'basicConstraints=CA:FALSE',
};

export class TestPki {
  readonly dir: string;
  private serial = 1;

  constructor(dir?: string) {
    this.dir = dir ?? mkdtempSync(join(tmpdir(), 'mssante-pki-'));
    mkdirSync(this.dir, { recursive: true });
  }

  /** A self-signed CA. */
  createCa(name: string, subject: Subject, options: Omit<IssueOptions, 'usage'> = {}): Issued {
    return this.issue(name, subject, null, { ...options, usage: 'ca' });
  }

  /** A certificate issued by `issuer` (a CA made here), or self-signed when issuer is null. */
  issue(name: string, subject: Subject, issuer: Issued | null, options: IssueOptions): Issued {
    const keyPath = join(this.dir, `${name}.key`);
    const csrPath = join(this.dir, `${name}.csr`);
    const certPath = join(this.dir, `${name}.crt`);
    const extPath = join(this.dir, `${name}.ext`);
    const db = join(this.dir, `${name}.db`);
    const now = Date.now();
    const notBefore = options.notBefore ?? opensslDate(new Date(now - 86_400_000));
    const notAfter = options.notAfter ?? opensslDate(new Date(now + 365 * 86_400_000));
    let ext = EXTENSIONS[options.usage];
    if (options.dnsNames && options.dnsNames.length > 0) {
      ext += `\nsubjectAltName=${options.dnsNames.map((n) => `DNS:${n}`).join(',')}`;
    }
    if (issuer !== null) ext += '\nauthorityKeyIdentifier=keyid';
    writeFileSync(extPath, `[ext]\n${ext}\n`);
    writeFileSync(db, '');
    writeFileSync(`${db}.attr`, 'unique_subject = no\n');
    const config = join(this.dir, `${name}.cnf`);
    writeFileSync(
      config,
      [
        '[ca]',
        'default_ca = ca_section',
        '[ca_section]',
        `database = ${db}`,
        `new_certs_dir = ${this.dir}`,
        `serial = ${join(this.dir, `${name}.serial`)}`,
        'default_md = sha256',
        'policy = policy_any',
        'unique_subject = no',
        'copy_extensions = none',
        'preserve = yes',
        'email_in_dn = no',
        '[policy_any]',
        'countryName = optional',
        'stateOrProvinceName = optional',
        'localityName = optional',
        'organizationName = optional',
        'organizationalUnitName = optional',
        'commonName = supplied',
        '[req]',
        'distinguished_name = req_dn',
        'utf8 = yes',
        'string_mask = utf8only',
        '[req_dn]',
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(this.dir, `${name}.serial`),
      `${(this.serial++).toString(16).padStart(4, '0')}${randomBytes(6).toString('hex')}\n`,
    );
    const keyArgs =
      options.keyType === 'ec'
        ? ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyPath]
        : ['genrsa', '-out', keyPath, '2048'];
    execFileSync('openssl', keyArgs, { stdio: 'pipe' });
    execFileSync(
      'openssl',
      ['req', '-new', '-config', config, '-utf8', '-key', keyPath, '-subj', subjectSlash(subject), '-out', csrPath],
      { stdio: 'pipe' },
    );
    const signArgs =
      issuer === null ? ['-selfsign', '-keyfile', keyPath] : ['-cert', issuer.certPath, '-keyfile', issuer.keyPath];
    execFileSync(
      'openssl',
      [
        'ca',
        '-batch',
        '-config',
        config,
        '-notext',
        '-utf8',
        '-in',
        csrPath,
        '-out',
        certPath,
        '-startdate',
        notBefore,
        '-enddate',
        notAfter,
        '-extfile',
        extPath,
        '-extensions',
        'ext',
        ...signArgs,
      ],
      { stdio: 'pipe' },
    );
    return {
      name,
      certPath,
      keyPath,
      certPem: readFileSync(certPath, 'utf8'),
      keyPem: readFileSync(keyPath, 'utf8'),
      subjectRfc2253: subjectRfc2253(subject),
    };
  }
}

/** The subject shape of an IGC-Santé operator server certificate. */
export function operatorSubject(cn: string, o: string, ou = '318310021300028', st = 'Paris (75)'): Subject {
  return [
    ['C', 'FR'],
    ['ST', st],
    ['O', o],
    ['OU', ou],
    ['CN', cn],
  ];
}
