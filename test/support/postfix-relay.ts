/**
 * A real Postfix outbound relay of its own (sending side), like startPostfix does for the receiving
 * MX: config, queue and log in a temp dir, smtpd on a free loopback port for the internal clients
 * (mynetworks), and the MSSante lines taken from deploy/postfix/main.cf.outbound and
 * master.cf.outbound as shipped (only the main.cf site values replaced, by renderDeployFile).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './daemon.js';
import { POSTFIX_DEPLOY_DIR, renderDeployFile, waitForBanner, waitForMasterExit, type QueueEntry } from './postfix.js';

export interface RelayOptions {
  /** host:port of `serve --socketmap-listen`. */
  readonly socketmapAddress: string;
  /** The IGC-Sante-like CA that issues the receiving MX certificates. */
  readonly caFile: string;
  /** The relay's client certificate (listed for the sender's domain). */
  readonly clientCert: { readonly certPath: string; readonly keyPath: string };
  /** Names the relay resolves to 127.0.0.1 (recipient domains), and the port its SMTP client connects to. */
  readonly localDestinations: { readonly names: readonly string[]; readonly port: number };
}

export interface RelayInstance {
  readonly port: number;
  readonly mainCf: string;
  readonly masterCf: string;
  queue(): QueueEntry[];
  log(): string;
  /** Asks the queue manager to retry deferred mail now. */
  flush(): void;
  stop(): Promise<void>;
}

export async function startRelay(options: RelayOptions): Promise<RelayInstance> {
  const dir = mkdtempSync(join(tmpdir(), 'mssante-relay-'));
  chmodSync(dir, 0o755);
  const configDir = join(dir, 'conf');
  const queueDir = join(dir, 'queue');
  const maillog = join(dir, 'maillog');
  mkdirSync(configDir);
  mkdirSync(queueDir);
  const port = await freePort();
  const deploy = renderDeployFile(join(POSTFIX_DEPLOY_DIR, 'main.cf.outbound'), {
    mssante_socketmap: `socketmap:inet:${options.socketmapAddress}`,
    mssante_smtp_tls_CAfile: options.caFile,
    mssante_smtp_tls_cert_file: options.clientCert.certPath,
    mssante_smtp_tls_key_file: options.clientCert.keyPath,
  });
  const mainCf = [
    '# Test relay: everything but the MSSante lines, which follow from the deploy file.',
    'compatibility_level = 3.6',
    `queue_directory = ${queueDir}`,
    `data_directory = ${join(dir, 'data')}`,
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'myhostname = relais.op1.mssante.test',
    'mydestination =',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'alias_maps =',
    'alias_database =',
    'biff = no',
    `maillog_file = ${maillog}`,
    `maillog_file_prefixes = ${dir}`,
    // Nothing may leave this machine but through smtp-mssante to the local receiving MX; a bounce
    // (which must never happen) would fail at once instead of trying the Internet.
    'default_transport = error:outbound mail disabled in tests',
    'relay_transport = error:outbound mail disabled in tests',
    // No DNS in tests: recipient domains resolve through a private /etc/hosts (see start below),
    // and the SMTP client connects to the receiving test MX's port.
    'smtp_dns_support_level = disabled',
    'smtp_host_lookup = native',
    `smtp_tcp_port = ${options.localDestinations.port}`,
    // Retry deferred mail soon, so a test can wait for the retry.
    'minimal_backoff_time = 1s',
    'maximal_backoff_time = 2s',
    'queue_run_delay = 1s',
    '',
    '# ---- main.cf.outbound ----',
    deploy,
  ].join('\n');
  writeFileSync(join(configDir, 'main.cf'), mainCf);
  const masterCf = [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    'pickup unix n - n 60 1 pickup',
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
    'smtp unix - - n - - smtp',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'postlog unix-dgram n - n - 1 postlogd',
    '',
    '# ---- master.cf.outbound ----',
    readFileSync(join(POSTFIX_DEPLOY_DIR, 'master.cf.outbound'), 'utf8'),
  ].join('\n');
  writeFileSync(join(configDir, 'master.cf'), masterCf);

  const readLog = (): string => (existsSync(maillog) ? readFileSync(maillog, 'utf8') : '');
  const check = spawnSync('postfix', ['-c', configDir, 'check'], { encoding: 'utf8' });
  if (check.status !== 0)
    throw new Error(`postfix -c ${configDir} check failed (${check.status}):\n${check.stderr}${check.stdout}\n${readLog()}`);
  // The relay (and every process it starts) sees its own /etc/hosts, in a private mount namespace:
  // the machine's file is never touched.
  const hosts = join(dir, 'hosts');
  writeFileSync(hosts, `127.0.0.1 localhost ${options.localDestinations.names.join(' ')}\n`);
  const start = spawnSync(
    'unshare',
    ['--mount', 'sh', '-c', 'mount --bind "$1" /etc/hosts && exec postfix -c "$2" start', 'sh', hosts, configDir],
    { encoding: 'utf8' },
  );
  if (start.status !== 0)
    throw new Error(
      `postfix -c ${configDir} start (in a mount namespace) failed (${start.status}):\n${start.stderr}${start.stdout}\n${readLog()}`,
    );
  const abortOnExit = (): void => {
    spawnSync('postfix', ['-c', configDir, 'abort'], { stdio: 'ignore' });
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
  return {
    port,
    mainCf,
    masterCf,
    queue() {
      const out = execFileSync('postqueue', ['-c', configDir, '-j'], { encoding: 'utf8' });
      return out
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as QueueEntry);
    },
    log: readLog,
    flush() {
      spawnSync('postqueue', ['-c', configDir, '-f'], { stdio: 'ignore' });
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      spawnSync('postfix', ['-c', configDir, 'stop'], { stdio: 'ignore' });
      await waitForMasterExit(join(queueDir, 'pid', 'master.pid'), 10_000);
      process.removeListener('exit', abortOnExit);
      if (process.env.MSSANTE_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
    },
  };
}
