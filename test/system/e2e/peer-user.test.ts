/**
 * Issue 21, point 2: any local user could throttle a chosen operator. With `--operator-rate` on,
 * every answered policy request spends a token of the CN it names; a local user flooding made-up
 * requests naming the victim's CN got the victim's real mail deferred (451 4.7.1).
 *
 * Here two throw-away users are created (useradd): the daemon allows one (`--allowed-peer-users`,
 * as the packaged config allows `postfix`), the other floods requests naming the victim's CN at the
 * same time. The flood gets no answer at all (each connection closed unread, counted in
 * connections_rejected_total{reason="peer_user"}); the allowed user's requests are answered, the
 * victim's message passes (DUNNO, never 451 4.7.1). Clients run as those users through node's
 * `uid`/`gid` spawn options: the test needs root, and skips without it (fails under CI=true).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { BASE_ENTRIES, VALID, metricNow, unsignedListFile } from '../../support/faults.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { toolOrSkip } from '../../support/tools.js';

const FLOOD = 60;
const ALLOWED_REQUESTS = 3;

/**
 * One connection per request: sends it, waits for the answer line or the close; prints a JSON line
 * {answers: [...], closedUnanswered: n}. Plain .mjs: it runs as an unprivileged user, without tsx.
 */
const CLIENT = `
import net from 'node:net';
const [host, port, count, cn, sender, tag] = process.argv.slice(2);
const ask = (i) => new Promise((resolve) => {
  const c = net.connect(Number(port), host);
  let got = '';
  c.setEncoding('utf8');
  c.on('connect', () => c.write(
    'request=smtpd_access_policy\\nprotocol_state=RCPT\\nencryption_protocol=TLSv1.3\\n' +
    'ccert_subject=' + cn + '\\nsender=' + sender + '\\nrecipient=dest@op-recv.mssante.fr\\n' +
    'client_address=127.0.0.1\\ninstance=' + tag + '.' + i + '\\n\\n'));
  c.on('data', (d) => { got += d; if (got.includes('\\n\\n')) c.end(); });
  c.on('error', () => undefined);
  c.on('close', () => resolve(got.trim()));
});
const answers = []; let closedUnanswered = 0;
for (let i = 0; i < Number(count); i++) {
  const a = await ask(i);
  if (a === '') closedUnanswered++; else answers.push(a);
}
process.stdout.write(JSON.stringify({ answers, closedUnanswered }) + '\\n');
`;

interface ClientResult {
  readonly answers: string[];
  readonly closedUnanswered: number;
}

function runAs(user: { uid: number; gid: number }, script: string, args: string[]): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { uid: user.uid, gid: user.gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out) as ClientResult) : reject(new Error(`client exit ${code}: ${err}`)),
    );
  });
}

function idOf(name: string): { uid: number; gid: number } {
  const [uid, gid] = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).split(':').slice(2, 4).map(Number);
  return { uid: uid!, gid: gid! };
}

describe('--allowed-peer-users against a local flood (issue 21)', { timeout: 900_000 }, () => {
  const suffix = `${process.pid % 100_000}`;
  const allowedName = `msspok${suffix}`;
  const intruderName = `msspbad${suffix}`;
  const created: string[] = [];
  let dir = '';
  let daemon: DaemonHandle | null = null;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mssante-peer-user-'));
    chmodSync(dir, 0o755);
    writeFileSync(join(dir, 'client.mjs'), CLIENT, { mode: 0o644 });
  });

  after(async () => {
    await daemon?.stop('SIGKILL');
    for (const name of created) execFileSync('userdel', [name], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });

  it("a throw-away user's flood naming the victim's CN gets no answer; the allowed user's requests are answered, the victim is not throttled", async (t) => {
    if (process.getuid?.() !== 0) {
      if (process.env.CI === 'true') throw new Error('CI=true: this test needs root (useradd, setuid clients)');
      t.skip('needs root: creates users and runs clients as them');
      return;
    }
    if (toolOrSkip(t, 'useradd') === null || toolOrSkip(t, 'userdel') === null || toolOrSkip(t, 'getent') === null) return;
    for (const name of [allowedName, intruderName]) {
      execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', name], { stdio: 'pipe' });
      created.push(name);
    }
    const allowed = idOf(allowedName);
    const intruder = idOf(intruderName);

    daemon = await startDaemon({
      whitelist: unsignedListFile(BASE_ENTRIES),
      extraArgs: ['--allowed-peer-users', allowedName, '--operator-rate', '1', '--operator-burst', String(ALLOWED_REQUESTS)],
      readyTimeoutMs: 180_000,
    });
    const [host, port] = [daemon.policyAddress.split(':')[0]!, daemon.policyAddress.split(':')[1]!];
    const script = join(dir, 'client.mjs');

    // The flood and the MTA's requests at the same time.
    const [flood, mta] = await Promise.all([
      runAs(intruder, script, [host, port, String(FLOOD), VALID.cn, VALID.sender, 'flood']),
      runAs(allowed, script, [host, port, String(ALLOWED_REQUESTS), VALID.cn, VALID.sender, 'mta']),
    ]);
    assert.deepEqual(flood, { answers: [], closedUnanswered: FLOOD }, 'the flood got no answer at all');
    assert.deepEqual(mta.answers, Array<string>(ALLOWED_REQUESTS).fill('action=DUNNO'), "the MTA's mail passes, never 451 4.7.1");
    assert.equal(mta.closedUnanswered, 0);

    // Nobody else either: the test runner itself (root) is not in the list.
    await assert.rejects(askOnce(daemon.policyAddress, postfixRequest(VALID.cn, VALID.sender)));

    assert.equal(
      await metricNow(daemon, 'connections_rejected_total', { frontend: 'policy', reason: 'peer_user' }),
      FLOOD + 1,
      'each refused connection counted once',
    );
    assert.equal(await metricNow(daemon, 'connections_rejected_total', { frontend: 'policy', reason: 'limit' }), 0);
    assert.equal(await metricNow(daemon, 'decisions_total', { result: 'tempfail' }), 0, 'no deferral at all');
    assert.equal(await daemon.stop(), 0);
    daemon = null;
  });

  it('an unknown name in --allowed-peer-users stops the start (exit 1), rather than refusing the MTA silently', async () => {
    await assert.rejects(
      startDaemon({ whitelist: unsignedListFile(BASE_ENTRIES), extraArgs: ['--allowed-peer-users', 'no-such-user-mssante'] }),
      /daemon exited with code 1[\s\S]*no local user named \\"no-such-user-mssante\\"/,
    );
  });
});
