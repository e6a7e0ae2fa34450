/**
 * The operator's lab kit (scripts/lab.sh) followed to the letter: it makes the certificates, a list
 * signed by xmlsec1 and a dedicated Postfix instance from deploy/postfix/test-instance/ +
 * main.cf.policy; the test runs the commands it prints — Postfix with a chrooted smtpd, the daemon
 * on the unix socket inside the chroot (unix:private/mssante-policyd, group postfix) — then every
 * printed swaks command, and compares what the SMTP client got with the answer the kit says to
 * expect. This is also the real-Postfix end-to-end run over a unix socket.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../../support/daemon.js';
import { REAL_LIST, REAL_SIGNER, REPO_ROOT, realListOrSkip } from '../../support/fixtures.js';
import { REASONS } from '../../../src/trust/reasons.js';
import { postfixE2eMissing } from '../../support/postfix-scenarios.js';
import { parseStages } from '../../support/swaks.js';
import { toolOrSkip } from '../../support/tools.js';

const READY_TIMEOUT_MS = 60_000;
const DELIVERY_TIMEOUT_MS = 30_000;
const REAL_LIST_READY_TIMEOUT_MS = 600_000;

function run(argv: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((ok) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      { cwd: REPO_ROOT, env: { ...process.env, ...env }, maxBuffer: 8 * 1024 * 1024 },
      (err, stdout, stderr) => {
        ok({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
      },
    );
  });
}

/** The command printed on the line after the line starting with `marker`. */
function commandAfter(lines: readonly string[], marker: string): string[] {
  const i = lines.findIndex((l) => l.startsWith(marker));
  assert.ok(i >= 0 && i + 1 < lines.length, `no "${marker}" step in the kit's output`);
  return lines[i + 1]!.trim().split(/\s+/);
}

test('lab kit: the printed Postfix, daemon and swaks commands give the printed answers (chrooted smtpd, unix:private socket)', async (t) => {
  const missing = postfixE2eMissing();
  if (missing !== null) {
    if (process.env.CI === 'true') throw new Error(`CI=true and ${missing}`);
    t.skip(missing);
    return;
  }
  if (toolOrSkip(t, 'openssl') === null || toolOrSkip(t, 'xmlsec1') === null) return;

  const parent = mkdtempSync(join(tmpdir(), 'mssante-lab-'));
  chmodSync(parent, 0o755); // Postfix's unprivileged processes traverse it
  const dir = join(parent, 'lab');
  const port = await freePort();
  const http = `127.0.0.1:${await freePort()}`;
  // The daemon from this checkout's source, as the kit prints it for an installed mssante-policyd.
  const cmd = `${process.execPath} --import tsx ${join(REPO_ROOT, 'src', 'cli.ts')}`;
  // --cn: a certificate for a server name of the real list (when it is here; else a stand-in name).
  const real = realServer();
  const cnArgs =
    real === null
      ? ['--cn', 'mx.absent-de-la-liste.mssante.test']
      : ['--cn', real.cn, '--from', `test@${real.domain}`, '--list', REAL_LIST, '--list-signer', REAL_SIGNER];
  const kit = await run(['bash', 'scripts/lab.sh', dir, '--port', String(port), '--http-listen', http, ...cnArgs], {
    MSSANTE_POLICYD_CMD: cmd,
  });
  assert.equal(kit.code, 0, kit.stderr);
  const lines = kit.stdout.split('\n');
  const named = new X509Certificate(readFileSync(join(dir, 'named.pem')));
  assert.equal(named.subject.split('\n').pop(), `CN=${cnArgs[1]}`);
  assert.ok(named.verify(new X509Certificate(readFileSync(join(dir, 'ca.pem'))).publicKey), 'issued by the lab CA');

  // The instance is the shipped test-instance files plus main.cf.policy, site values only replaced.
  const mainCf = readFileSync(join(dir, 'postfix', 'main.cf'), 'utf8');
  for (const file of ['test-instance/main.cf', 'main.cf.policy']) {
    const shipped = readFileSync(join(REPO_ROOT, 'deploy', 'postfix', file), 'utf8').split('\n');
    const inSite = (l: string): boolean =>
      /^(queue_directory|data_directory|maillog_file|maillog_file_prefixes|virtual_mailbox_base|smtpd_tls_CAfile|smtpd_tls_cert_file|smtpd_tls_key_file|mssante_policy_service) = /.test(
        l,
      );
    for (const line of shipped.filter((l) => l !== '' && !inSite(l)))
      assert.ok(mainCf.includes(line), `${file}: "${line}" in the lab's main.cf`);
  }
  const postconf = spawnSync('postconf', ['-c', join(dir, 'postfix'), '-h', 'mssante_policy_service'], { encoding: 'utf8' });
  assert.equal(postconf.stdout.trim(), 'unix:private/mssante-policyd');
  assert.match(
    readFileSync(join(dir, 'postfix', 'master.cf'), 'utf8'),
    new RegExp(`^${port}\\s+inet\\s+n\\s+-\\s+y\\s+-\\s+-\\s+smtpd$`, 'm'),
    'smtpd chrooted',
  );

  const postfixStart = commandAfter(lines, '1. ');
  const started = await run(postfixStart);
  const maillog = (): string =>
    existsSync(join(dir, 'postfix', 'maillog')) ? readFileSync(join(dir, 'postfix', 'maillog'), 'utf8') : '';
  assert.equal(started.code, 0, `${postfixStart.join(' ')}: ${started.stderr}\n${maillog()}`);
  const daemons: Daemon[] = [];
  t.after(async () => {
    for (const d of daemons) await d.stop();
    spawnSync('postfix', ['-c', join(dir, 'postfix'), 'stop'], { stdio: 'ignore' });
    if (process.env.MSSANTE_KEEP_TMP !== '1') rmSync(parent, { recursive: true, force: true });
  });
  const daemon = await startPrinted(commandAfter(lines, '2. '), http);
  daemons.push(daemon);

  // The socket in smtpd's chroot: a socket, 0660, group postfix.
  const socket = join(dir, 'postfix', 'spool', 'private', 'mssante-policyd');
  const st = lstatSync(socket);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o660);
  const postfixGid = Number(spawnSync('getent', ['group', 'postfix'], { encoding: 'utf8' }).stdout.split(':')[2]);
  assert.equal(st.gid, postfixGid);

  const maildir = join(dir, 'mail', 'destinataire', 'dr.test', 'new');
  const delivered = (): number => (existsSync(maildir) ? readdirSync(maildir).length : 0);
  let cases = 0;
  for (let i = 0; i < lines.length; i++) {
    const m = /^\s*# expect: (\d{3})(?: (\d\.\d\.\d) (.*))?$/.exec(lines[i]!);
    if (m === null) continue;
    const swaks = lines[i + 1]!.trim().split(/\s+/);
    assert.equal(swaks[0], 'swaks');
    const before = delivered();
    const res = await run(swaks);
    const stages = parseStages(res.stdout);
    const context = `\n${swaks.join(' ')}\n${res.stdout}\n--- postfix log\n${maillog().split('\n').slice(-15).join('\n')}`;
    if (m[1] === '250') {
      assert.equal(stages.find((s) => s.command === '.')?.code, 250, `not accepted${context}`);
      const until = Date.now() + DELIVERY_TIMEOUT_MS;
      while (delivered() === before) {
        assert.ok(Date.now() < until, `accepted but not delivered into ${maildir}${context}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    } else {
      const rcpt = stages.find((s) => s.command === 'RCPT');
      assert.equal(rcpt?.code, Number(m[1]), `RCPT not answered ${m[1]}${context}`);
      assert.equal(rcpt?.enhanced, m[2]);
      assert.ok(rcpt?.text.includes(m[3]!), `"${m[3]}" not in "${rcpt?.text}"`);
      assert.equal(delivered(), before, 'a refused message was delivered');
    }
    cases++;
  }
  assert.equal(cases, 4, 'the kit prints four cases');

  const query = lines
    .find((l) => l.includes('Ask the daemon directly:'))!
    .split('directly:')[1]!
    .trim()
    .split(/\s+/);
  const answer = await run(query);
  assert.equal(answer.stdout.trim(), 'action=DUNNO', answer.stderr);

  await t.test('--cn: a certificate for a server of the real list, the daemon on the real list, as printed', async (t) => {
    if (realListOrSkip(t) === null || real === null) return;
    const i = lines.findIndex((l) => l.startsWith('5. A server of the real list: '));
    assert.ok(i >= 0, 'step 5 printed');
    const serveReal = lines
      .slice(i)
      .find((l) => l.includes(' serve --whitelist '))!
      .trim()
      .split(/\s+/);
    assert.deepEqual(serveReal.slice(serveReal.indexOf('--whitelist'), serveReal.indexOf('--whitelist') + 2), [
      '--whitelist',
      REAL_LIST,
    ]);
    await daemon.stop();
    // The real list (6 494 entries, signature verified) takes far longer than the lab's on a busy machine.
    const onReal = await startPrinted(serveReal, http, REAL_LIST_READY_TIMEOUT_MS);
    daemons.push(onReal);
    const j = lines.findIndex((l) => /^\s*# expect with the real list: 250$/.test(l));
    const swaks = lines[j + 1]!.trim().split(/\s+/);
    assert.equal(swaks[0], 'swaks');
    const before = delivered();
    const res = await run(swaks);
    const context = `\n${swaks.join(' ')}\n${res.stdout}\n--- postfix log\n${maillog().split('\n').slice(-15).join('\n')}\n--- daemon\n${onReal.logs.join('').slice(-3000)}`;
    assert.equal(parseStages(res.stdout).find((s) => s.command === '.')?.code, 250, `not accepted${context}`);
    const until = Date.now() + DELIVERY_TIMEOUT_MS;
    while (delivered() === before) {
      assert.ok(Date.now() < until, `accepted but not delivered${context}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    // The same certificate for a domain the real list binds to another server: refused with that reason.
    const other = swaks.map((w) => (w === `test@${real.domain}` ? `test@${real.otherDomain}` : w));
    const refused = parseStages((await run(other)).stdout).find((s) => s.command === 'RCPT');
    assert.equal(refused?.code, 550);
    assert.ok(refused?.text.includes(REASONS.sender_cert_mismatch.en), refused?.text);
  });
});

interface Daemon {
  readonly logs: string[];
  stop(): Promise<void>;
}

/** Starts a daemon command line as the kit printed it; resolves once /readyz says 200. */
async function startPrinted(argv: readonly string[], http: string, readyTimeoutMs = READY_TIMEOUT_MS): Promise<Daemon> {
  const child = spawn(argv[0]!, argv.slice(1), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (s: string) => logs.push(s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => logs.push(s));
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    const status = await fetch(`http://${http}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
      async (r) => (await r.arrayBuffer(), r.status),
      () => 0,
    );
    if (status === 200) return { logs, stop };
    if (Date.now() >= deadline || child.exitCode !== null) {
      await stop();
      assert.fail(`daemon not ready (${argv.join(' ')}):\n${logs.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * A server of the real list as Postfix would name it (CN), a domain the list binds to it, and a domain
 * it binds to other servers only; null when the real list is not beside the checkout.
 */
function realServer(): { cn: string; domain: string; otherDomain: string } | null {
  if (!existsSync(REAL_LIST)) return null;
  const xml = readFileSync(REAL_LIST, 'utf8');
  const cnsOf = new Map<string, Set<string>>();
  for (const block of xml.split('<Domaine>').slice(1)) {
    const nom = /<Nom>\s*([A-Za-z0-9.-]+)\s*<\/Nom>/.exec(block)?.[1];
    const cn = /<DNCertificatOperateur>\s*CN\s*=\s*([A-Za-z0-9.-]+)\s*,/.exec(block)?.[1];
    if (nom === undefined || cn === undefined) continue;
    const set = cnsOf.get(nom.toLowerCase()) ?? new Set<string>();
    set.add(cn.toLowerCase());
    cnsOf.set(nom.toLowerCase(), set);
  }
  const [domain, cns] = [...cnsOf].find(([, set]) => set.size === 1)!;
  const cn = [...cns][0]!;
  const otherDomain = [...cnsOf].find(([, set]) => !set.has(cn))![0];
  return { cn, domain, otherDomain };
}
