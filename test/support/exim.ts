/**
 * A real Exim (Debian's exim4-daemon-heavy, unpacked beside Postfix by
 * scripts/install-exim-private.sh) listening on a loopback port with its own config, spool and
 * logs in a temp dir. TLS uses the test PKI; client certificates are asked for and verified
 * against the test CA; the MSSanté ACL is the deploy file itself (.include, never a copy).
 * Accepted mail is appended to one mbox, DIR/mail/inbox, each copy with its Envelope-to header.
 *
 * Privileges: the Debian binary honours -C from root without listing the file in its
 * TRUSTED_CONFIG_LIST (/etc/exim4/trusted_configs), so nothing outside the temp dir is touched.
 * The daemon (root) hands each session to Debian-exim; the delivery re-exec keeps -C and so runs
 * as Debian-exim too ("exim user lost privilege for using -C option" in the panic log is that,
 * and harmless): hence the Debian-exim ownership below and a transport user of Debian-exim.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  accessSync,
  appendFileSync,
  chmodSync,
  chownSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { freePort } from './daemon.js';
import type { Issued } from './pki.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The deploy file under test; the config includes it by path. */
export const EXIM_ACL_FILE = join(REPO, 'deploy', 'exim', 'mssante-policyd.acl');
/** The deploy file of TLS versions and suites (main section). */
export const EXIM_TLS_FILE = join(REPO, 'deploy', 'exim', 'mssante-tls.conf');

/** Where scripts/install-exim-private.sh puts the binary by default. */
export const DEFAULT_EXIM_BIN = '/opt/mssante-exim/usr/sbin/exim4';

/** The Exim binary: $MSSANTE_EXIM_BIN, the private install, or an exim4/exim on PATH. */
export function findExim(): string | null {
  const candidates = [process.env.MSSANTE_EXIM_BIN, DEFAULT_EXIM_BIN];
  for (const c of candidates) {
    if (c && isExecutable(c)) return c;
  }
  for (const name of ['exim4', 'exim']) {
    try {
      const p = execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
      if (p && isExecutable(p)) return p;
    } catch {
      // not on PATH
    }
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The Exim binary when these tests can run it, else why not. */
export function probeExim(): { readonly bin: string } | { readonly why: string } {
  const bin = findExim();
  if (bin === null) {
    return { why: `no Exim binary: run scripts/install-exim-private.sh (installs ${DEFAULT_EXIM_BIN}) or set MSSANTE_EXIM_BIN` };
  }
  if (process.getuid?.() !== 0) return { why: 'the Exim daemon must be started as root (it switches to Debian-exim)' };
  if (!hasUser('Debian-exim')) return { why: 'user Debian-exim missing: run scripts/install-exim-private.sh' };
  return { bin };
}

/**
 * The Exim binary, or null after skipping the test with the reason. Under CI=true a missing Exim
 * (or not being root, which the daemon needs to switch to its user) fails the test instead.
 */
export function eximOrSkip(t: TestContext): string | null {
  const probe = probeExim();
  if ('bin' in probe) return probe.bin;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${probe.why}`);
  t.skip(probe.why);
  return null;
}

function hasUser(name: string): boolean {
  try {
    execFileSync('id', ['-u', name], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

function idOf(flag: '-u' | '-g', name: string): number {
  return Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
}

export interface EximOptions {
  readonly bin: string;
  /** The daemon's policy listener: `host:port`, or the path of a unix socket. */
  readonly policyAddress: string;
  /** Server certificate and key Exim presents. */
  readonly serverCert: Issued;
  /** The CA client certificates must chain to (tls_verify_certificates). */
  readonly ca: Issued;
  /** More CAs Exim also trusts for client certificates (appended to tls_verify_certificates' file). */
  readonly extraCas?: readonly Issued[];
  /** The SMTP stages that ask the daemon; default RCPT only. */
  readonly stages?: ReadonlyArray<'MAIL' | 'RCPT'>;
  /** Seconds Exim waits for the daemon (MSSANTE_POLICYD_TIMEOUT); default the deploy file's. */
  readonly timeoutSeconds?: number;
  /** Include deploy/exim/mssante-tls.conf (default true); false leaves GnuTLS's defaults. */
  readonly tlsProfile?: boolean;
}

export interface RunningExim {
  readonly port: number;
  readonly dir: string;
  readonly configPath: string;
  /** The copy delivered to `recipient` that holds `marker`, waiting up to `timeoutMs` for delivery. */
  waitForMail(recipient: string, marker: string, timeoutMs?: number): Promise<string>;
  /** Envelope recipients of every copy delivered so far. */
  delivered(): string[];
  /** Exim's main log (and panic log, when there is one). */
  logs(): string;
  stop(): Promise<void>;
}

export async function startExim(options: EximOptions): Promise<RunningExim> {
  const { bin } = options;
  const dir = mkdtempSync(join(tmpdir(), 'mssante-exim-'));
  // Exim's reception and delivery processes run as Debian-exim and must reach the subfolders.
  chmodSync(dir, 0o755);
  const uid = idOf('-u', 'Debian-exim');
  const gid = idOf('-g', 'Debian-exim');
  for (const sub of ['spool', 'log', 'mail', 'tls']) {
    mkdirSync(join(dir, sub));
    chownSync(join(dir, sub), uid, gid);
  }
  // The reception process runs as Debian-exim and must read the TLS files.
  const tls = (name: string, from: string): string => {
    const to = join(dir, 'tls', name);
    copyFileSync(from, to);
    chownSync(to, uid, gid);
    return to;
  };
  const serverCrt = tls('server.crt', options.serverCert.certPath);
  const serverKey = tls('server.key', options.serverCert.keyPath);
  const caCrt = tls('ca.crt', options.ca.certPath);
  for (const extra of options.extraCas ?? []) appendFileSync(caCrt, readFileSync(extra.certPath));
  const port = await freePort();
  const stages = options.stages ?? ['RCPT'];

  const config = [
    `MSSANTE_POLICYD_SOCKET = ${options.policyAddress.startsWith('/') ? '' : 'inet:'}${options.policyAddress}`,
    ...(options.timeoutSeconds !== undefined ? [`MSSANTE_POLICYD_TIMEOUT = ${options.timeoutSeconds}s`] : []),
    // Re-exec for delivery must find this binary, not the compiled-in /usr/sbin/exim4.
    `exim_path = ${bin}`,
    'primary_hostname = mx.exim.test',
    'exim_user = Debian-exim',
    'exim_group = Debian-exim',
    `spool_directory = ${dir}/spool`,
    `log_file_path = ${dir}/log/%slog`,
    `pid_file_path = ${dir}/exim.pid`,
    'log_selector = +tls_peerdn +tls_certificate_verified +tls_cipher',
    'local_interfaces = 127.0.0.1',
    `daemon_smtp_ports = ${port}`,
    'host_lookup =',
    'rfc1413_hosts =',
    'keep_environment =',
    'tls_advertise_hosts = *',
    `tls_certificate = ${serverCrt}`,
    `tls_privatekey = ${serverKey}`,
    `tls_verify_certificates = ${caCrt}`,
    'tls_try_verify_hosts = *',
    ...((options.tlsProfile ?? true) ? [`.include ${EXIM_TLS_FILE}`] : []),
    'acl_smtp_mail = acl_mail',
    'acl_smtp_rcpt = acl_rcpt',
    '',
    'begin acl',
    '',
    `.include ${EXIM_ACL_FILE}`,
    '',
    'acl_mail:',
    ...(stages.includes('MAIL') ? ['  require acl = mssante_policyd MAIL'] : []),
    '  accept',
    '',
    'acl_rcpt:',
    ...(stages.includes('RCPT') ? ['  require acl = mssante_policyd RCPT'] : []),
    '  accept',
    '',
    'begin routers',
    '',
    'to_file:',
    '  driver = accept',
    '  transport = to_file',
    '',
    'begin transports',
    '',
    'to_file:',
    '  driver = appendfile',
    // A file name built from $local_part would be tainted (refused since Exim 4.94).
    `  file = ${dir}/mail/inbox`,
    '  envelope_to_add = true',
    '  user = Debian-exim',
    '  group = Debian-exim',
    '  mode = 0644',
    '',
    'begin retry',
    '',
    '*  *  F,1m,1m',
    '',
  ].join('\n');
  const configPath = join(dir, 'exim.conf');
  writeFileSync(configPath, config, { mode: 0o644 });

  // Fails fast with Exim's own words when the config does not parse.
  try {
    execFileSync(bin, ['-C', configPath, '-bV'], { stdio: 'pipe' });
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`exim rejects its config: ${String(e.stderr ?? '')}${String(e.stdout ?? '')}`, { cause: err });
  }

  const child: ChildProcess = spawn(bin, ['-C', configPath, '-bdf'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    output += d.toString();
  });
  let exited = false;
  const exitedPromise = new Promise<void>((r) =>
    child.once('exit', () => {
      exited = true;
      r();
    }),
  );

  const logs = (): string => {
    let text = output;
    for (const name of ['mainlog', 'paniclog']) {
      const p = join(dir, 'log', name);
      if (existsSync(p)) text += `--- ${name}\n${readFileSync(p, 'utf8')}`;
    }
    return text;
  };

  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGTERM');
      const text = logs();
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`exim did not start listening on 127.0.0.1:${port}\n${text}`);
    }
    await sleep(50);
  }

  const inbox = join(dir, 'mail', 'inbox');
  const copies = (): string[] =>
    existsSync(inbox)
      ? readFileSync(inbox, 'utf8')
          .split(/^(?=From )/m)
          .filter((c) => c !== '')
      : [];
  const envelopeTo = (copy: string): string => /^Envelope-to: (.*)$/m.exec(copy)?.[1]?.trim() ?? '';
  return {
    port,
    dir,
    configPath,
    async waitForMail(recipient, marker, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        // Delivery runs in a process of its own after the 250 to DATA.
        const copy = copies().find((c) => envelopeTo(c) === recipient && c.includes(marker));
        if (copy !== undefined) return copy;
        if (Date.now() > end) throw new Error(`no mail holding ${marker} for ${recipient} within ${timeoutMs} ms\n${logs()}`);
        await sleep(50);
      }
    },
    delivered() {
      return copies().map(envelopeTo);
    },
    logs,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        await Promise.race([exitedPromise, sleep(5000)]);
        if (!exited) child.kill('SIGKILL');
      }
      // Exim's own children (a delivery, a queue run) may still write to the spool for a moment:
      // ENOTEMPTY is retried rather than failing the test that just passed.
      rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      r(true);
    });
    s.once('error', () => r(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
