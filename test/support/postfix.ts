/**
 * A real Postfix instance of its own: config, queue, data and mailboxes in a temp dir, one smtpd
 * on a free loopback port, started with `postfix -c DIR start` (as root). The MSSante lines of its
 * main.cf are the operators' deploy file itself (deploy/postfix/main.cf.policy or .milter): only
 * the values of the parameters in the file's "site values" block are replaced (renderDeployFile).
 * Accepted mail is really delivered by Postfix's virtual(8) agent into a maildir per recipient.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  chownSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
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

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const POSTFIX_DEPLOY_DIR = join(REPO, 'deploy', 'postfix');

export type PostfixVariant = 'policy' | 'milter';

/** The deploy file each variant loads, and the site parameter that points at the daemon. */
const VARIANTS: Readonly<Record<PostfixVariant, { file: string; serviceParam: string }>> = {
  policy: { file: 'main.cf.policy', serviceParam: 'mssante_policy_service' },
  milter: { file: 'main.cf.milter', serviceParam: 'mssante_milter_service' },
};

const SITE_BEGIN = '# --- site values ---';
const SITE_END = '# --- end of site values ---';
/** virtual(8) delivers as this uid/gid (nobody/nogroup on Debian); it refuses uids below 100. */
const MAILBOX_ID = 65534;

function findPostfix(): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin']) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, 'postfix'), constants.X_OK);
      return join(dir, 'postfix');
    } catch {
      // not here
    }
  }
  return null;
}

/** Why a private Postfix cannot run here (not installed, not root), or null when it can. */
export function postfixMissing(): string | null {
  if (findPostfix() === null) return 'postfix is not installed (apt-get install postfix)';
  if (process.getuid?.() !== 0) return 'a private Postfix instance needs root (postfix -c DIR start)';
  return null;
}

/** The postfix command, or null after skipping the test with the reason; under CI=true, fails instead. */
export function postfixOrSkip(t: TestContext): string | null {
  const why = postfixMissing();
  if (why === null) return findPostfix();
  if (process.env.CI === 'true') throw new Error(`CI=true and ${why}`);
  t.skip(why);
  return null;
}

/**
 * A deploy file with the values of its site parameters replaced. `site` must name exactly the
 * parameters of the file's site block, so that no operator path leaks into a test and a new site
 * parameter cannot go unnoticed. Every other line is returned verbatim.
 */
export function renderDeployFile(path: string, site: Readonly<Record<string, string>>): string {
  const lines = readFileSync(path, 'utf8').split('\n');
  const begin = lines.indexOf(SITE_BEGIN);
  const end = lines.indexOf(SITE_END);
  if (begin < 0 || end < begin) throw new Error(`${path}: no "${SITE_BEGIN}" ... "${SITE_END}" block`);
  const seen = new Set<string>();
  for (let i = begin + 1; i < end; i++) {
    const m = /^([A-Za-z0-9_]+)\s*=/.exec(lines[i]!);
    if (!m) continue;
    const name = m[1]!;
    const value = site[name];
    if (value === undefined) throw new Error(`${path}: site parameter ${name} has no test value`);
    lines[i] = `${name} = ${value}`;
    seen.add(name);
  }
  const missing = Object.keys(site).filter((k) => !seen.has(k));
  if (missing.length > 0) throw new Error(`${path}: no site parameter ${missing.join(', ')} in the site block`);
  return lines.join('\n');
}

export interface PostfixOptions {
  readonly variant: PostfixVariant;
  /**
   * host:port where the daemon answers for this variant (policy or Milter); or `unix:private/NAME`,
   * a socket in the queue directory, and then smtpd runs chrooted there as in Debian's stock master.cf.
   */
  readonly serviceAddress: string;
  /** CA file the client certificates are verified against (the IGC-Sante-like test CA). */
  readonly caFile: string;
  readonly serverCert: { readonly certPath: string; readonly keyPath: string };
  /** Addresses delivered to a maildir each; their domains are this MX's domains. */
  readonly recipients: readonly string[];
  /** main.cf lines appended after the deploy file (a later setting overrides an earlier one). */
  readonly extraMainCf?: readonly string[];
}

export interface QueueEntry {
  readonly queue_name: string;
  readonly queue_id: string;
  readonly sender: string;
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly delay_reason?: string }>;
}

export interface PostfixInstance {
  readonly dir: string;
  /** queue_directory, also smtpd's chroot when the service address is unix:private/... */
  readonly queueDir: string;
  readonly configDir: string;
  /** The smtpd listener on 127.0.0.1. */
  readonly port: number;
  /** The main.cf Postfix runs with. */
  readonly mainCf: string;
  /** Full texts of the messages in the recipient's maildir. */
  messages(recipient: string): string[];
  /** Waits (10 s by default) for a message carrying X-Mssante-Test-Id: testId in the maildir. */
  waitForMessage(recipient: string, testId: string, timeoutMs?: number): Promise<string>;
  /** `postqueue -j`: what Postfix holds and has not delivered. */
  queue(): QueueEntry[];
  /** Postfix's own log (maillog_file). */
  log(): string;
  stop(): Promise<void>;
}

export async function startPostfix(options: PostfixOptions): Promise<PostfixInstance> {
  const bin = findPostfix();
  if (bin === null) throw new Error('postfix is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'mssante-postfix-'));
  // Postfix's unprivileged processes (and virtual(8) as nobody) must traverse it.
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'conf');
  const queueDir = join(dir, 'queue');
  const mailboxBase = join(dir, 'mail');
  const maillog = join(dir, 'maillog');
  mkdirSync(configDir);
  mkdirSync(queueDir); // postfix check creates its subdirectories with the right owners
  mkdirSync(mailboxBase);
  chownSync(mailboxBase, MAILBOX_ID, MAILBOX_ID);
  const port = await freePort();

  const { file, serviceParam } = VARIANTS[options.variant];
  const chrooted = options.serviceAddress.startsWith('unix:private/');
  const deploy = renderDeployFile(join(POSTFIX_DEPLOY_DIR, file), {
    smtpd_tls_CAfile: options.caFile,
    smtpd_tls_cert_file: options.serverCert.certPath,
    smtpd_tls_key_file: options.serverCert.keyPath,
    [serviceParam]: chrooted ? options.serviceAddress : `inet:${options.serviceAddress}`,
  });
  const domains = [...new Set(options.recipients.map(domainOf))];
  const mailboxes = options.recipients.map((r) => `${r}=${mailboxPath(r)}`).join(', ');
  const base = [
    '# Test instance: everything but the MSSante lines, which follow from the deploy file.',
    'compatibility_level = 3.6',
    `queue_directory = ${queueDir}`,
    `data_directory = ${join(dir, 'data')}`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'myhostname = mx.destinataire.mssante.test',
    'mydestination =',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'alias_maps =',
    'alias_database =',
    'biff = no',
    `maillog_file = ${maillog}`,
    `maillog_file_prefixes = ${dir}`,
    // Nothing may leave this machine: any non-local delivery (a bounce, say) fails at once.
    'default_transport = error:outbound mail disabled in tests',
    'relay_transport = error:outbound mail disabled in tests',
    `virtual_mailbox_domains = ${domains.join(', ')}`,
    `virtual_mailbox_base = ${mailboxBase}`,
    `virtual_mailbox_maps = inline:{ ${mailboxes} }`,
    `virtual_uid_maps = static:${MAILBOX_ID}`,
    `virtual_gid_maps = static:${MAILBOX_ID}`,
    'virtual_transport = virtual',
    '',
    `# ---- ${file} ----`,
    deploy,
    ...(options.extraMainCf !== undefined ? ['', '# ---- test overrides ----', ...options.extraMainCf] : []),
  ].join('\n');
  writeFileSync(join(configDir, 'main.cf'), base);
  // No chroot for an inet: service: the inet: policy and Milter connections work the same from inside
  // a jail. With unix:private/..., smtpd is chrooted in the queue directory, as operators' stock
  // master.cf does, and reaches the socket through the jail (TLS files are opened before chroot).
  writeFileSync(
    join(configDir, 'master.cf'),
    [
      `127.0.0.1:${port} inet n - ${chrooted ? 'y' : 'n'} - - smtpd`,
      'cleanup unix n - n - 0 cleanup',
      'qmgr unix n - n 300 1 qmgr',
      'tlsmgr unix - - n 1000? 1 tlsmgr',
      'rewrite unix - - n - - trivial-rewrite',
      'bounce unix - - n - 0 bounce',
      'defer unix - - n - 0 bounce',
      'trace unix - - n - 0 bounce',
      'verify unix - - n - 1 verify',
      'flush unix n - n 1000? 0 flush',
      'proxymap unix - - n - - proxymap',
      'showq unix n - n - - showq',
      'error unix - - n - - error',
      'retry unix - - n - - error',
      'discard unix - - n - - discard',
      'virtual unix - n n - - virtual',
      'anvil unix - - n - 1 anvil',
      'scache unix - - n - 1 scache',
      'postlog unix-dgram n - n - 1 postlogd',
      '',
    ].join('\n'),
  );

  const readLog = (): string => (existsSync(maillog) ? readFileSync(maillog, 'utf8') : '');
  const check = spawnSync(bin, ['-c', configDir, 'check'], { encoding: 'utf8' });
  if (check.status !== 0) {
    throw new Error(`postfix -c ${configDir} check failed (${check.status}):\n${check.stderr}${check.stdout}\n${readLog()}`);
  }
  const start = spawnSync(bin, ['-c', configDir, 'start'], { encoding: 'utf8' });
  if (start.status !== 0) {
    throw new Error(`postfix -c ${configDir} start failed (${start.status}):\n${start.stderr}${start.stdout}\n${readLog()}`);
  }
  const abortOnExit = (): void => {
    spawnSync(bin, ['-c', configDir, 'abort'], { stdio: 'ignore' });
  };
  process.once('exit', abortOnExit);
  try {
    await waitForBanner(port, 10_000, readLog);
  } catch (error) {
    abortOnExit();
    process.removeListener('exit', abortOnExit);
    throw error;
  }

  let stopped = false;
  const messages = (recipient: string): string[] => {
    const md = join(mailboxBase, mailboxPath(recipient));
    const out: string[] = [];
    for (const sub of ['new', 'cur']) {
      const d = join(md, sub);
      if (!existsSync(d)) continue;
      for (const f of readdirSync(d).sort()) out.push(readFileSync(join(d, f), 'utf8'));
    }
    return out;
  };
  const queue = (): QueueEntry[] => {
    const out = execFileSync('postqueue', ['-c', configDir, '-j'], { encoding: 'utf8' });
    return out
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as QueueEntry);
  };
  return {
    dir,
    queueDir,
    configDir,
    port,
    mainCf: base,
    messages,
    queue,
    async waitForMessage(recipient, testId, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = messages(recipient).find((m) => m.includes(`X-Mssante-Test-Id: ${testId}`));
        if (hit !== undefined) return hit;
        if (Date.now() > deadline) {
          throw new Error(
            `no message ${testId} for ${recipient} within ${timeoutMs} ms; queue: ${JSON.stringify(queue())}\n${readLog()}`,
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    log: readLog,
    async stop() {
      if (stopped) return;
      stopped = true;
      spawnSync(bin, ['-c', configDir, 'stop'], { stdio: 'ignore' });
      await waitForMasterExit(join(queueDir, 'pid', 'master.pid'), 10_000);
      process.removeListener('exit', abortOnExit);
      if (process.env.MSSANTE_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
    },
  };
}

function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) throw new Error(`not an address: ${address}`);
  return address.slice(at + 1).toLowerCase();
}

/** Relative to virtual_mailbox_base; the trailing slash makes it a maildir. */
function mailboxPath(address: string): string {
  return `${domainOf(address)}/${address.slice(0, address.lastIndexOf('@')).toLowerCase()}/`;
}

/**
 * Waits for smtpd's 220 banner. smtpd reads most of main.cf when a connection arrives, so a bad
 * setting shows here as a connection closed without banner and a "fatal:" log line.
 */
export async function waitForBanner(port: number, timeoutMs: number, readLog: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const banner = await new Promise<string>((ok) => {
      let got = '';
      const s = connect(port, '127.0.0.1');
      s.setTimeout(5000, () => s.destroy());
      s.setEncoding('utf8');
      s.on('data', (c: string) => {
        got += c;
        if (got.includes('\n')) {
          s.end('QUIT\r\n');
          s.destroy();
        }
      });
      s.once('error', () => undefined);
      s.once('close', () => ok(got));
    });
    if (banner.startsWith('220')) return;
    const fatal = readLog()
      .split('\n')
      .filter((l) => /\b(fatal|panic):/.test(l));
    if (fatal.length > 0) throw new Error(`Postfix smtpd cannot start:\n${fatal.join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no 220 banner from Postfix smtpd on 127.0.0.1:${port} after ${timeoutMs} ms\n${readLog()}`);
}

export async function waitForMasterExit(pidFile: string, timeoutMs: number): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Postfix master (pid ${pid}) still running ${timeoutMs} ms after postfix stop`);
}
