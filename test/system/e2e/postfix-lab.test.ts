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
import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { freePort } from '../../support/daemon.js';
import { REPO_ROOT } from '../../support/fixtures.js';
import { postfixE2eMissing } from '../../support/postfix-scenarios.js';
import { parseStages } from '../../support/swaks.js';
import { toolOrSkip } from '../../support/tools.js';

const READY_TIMEOUT_MS = 60_000;
const DELIVERY_TIMEOUT_MS = 30_000;

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
  const kit = await run(['bash', 'scripts/lab.sh', dir, '--port', String(port), '--http-listen', http], {
    MSSANTE_POLICYD_CMD: cmd,
  });
  assert.equal(kit.code, 0, kit.stderr);
  const lines = kit.stdout.split('\n');

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
  const serve = commandAfter(lines, '2. ');
  const daemon = spawn(serve[0]!, serve.slice(1), { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  daemon.stdout.setEncoding('utf8').on('data', (s: string) => logs.push(s));
  daemon.stderr.setEncoding('utf8').on('data', (s: string) => logs.push(s));
  const exited = new Promise<void>((ok) => daemon.once('exit', () => ok()));
  t.after(async () => {
    daemon.kill('SIGTERM');
    await exited;
    spawnSync('postfix', ['-c', join(dir, 'postfix'), 'stop'], { stdio: 'ignore' });
    if (process.env.MSSANTE_KEEP_TMP !== '1') rmSync(parent, { recursive: true, force: true });
  });
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const status = await fetch(`http://${http}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
      async (r) => (await r.arrayBuffer(), r.status),
      () => 0,
    );
    if (status === 200) break;
    assert.ok(Date.now() < deadline, `daemon not ready:\n${logs.join('')}`);
    assert.equal(daemon.exitCode, null, `daemon exited:\n${logs.join('')}`);
    await new Promise((r) => setTimeout(r, 200));
  }

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
});
