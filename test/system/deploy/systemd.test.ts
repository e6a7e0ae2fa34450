/**
 * deploy/systemd/mssante-policyd.service: systemd's own judgement of the sandbox
 * (systemd-analyze security, exposure < 2.0) and of the syntax (systemd-analyze verify), and the
 * daemon's acceptance of the exact command line the unit runs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { SETTINGS } from '../../../src/config.js';
import { ACTIVATION_NAMES } from '../../../src/frontend-registry.js';
import { toolOrSkip } from '../../support/tools.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const UNIT = join(REPO, 'deploy', 'systemd', 'mssante-policyd.service');
const MAX_EXPOSURE = 2.0;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(cmd: string, args: readonly string[]): Promise<Run> {
  return new Promise((ok) => {
    execFile(cmd, args, { cwd: REPO, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      ok({ code, stdout, stderr });
    });
  });
}

/** [Service] (and other sections') settings: key → values in order; continuation lines are not used by this unit. */
function unitSettings(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `not a setting: ${line}`);
    const key = line.slice(0, eq);
    settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1)]);
  }
  return settings;
}

function one(settings: Map<string, string[]>, key: string): string {
  const values = settings.get(key);
  assert.ok(values !== undefined && values.length === 1, `${key}= set once`);
  return values[0]!;
}

test('systemd-analyze security: exposure below 2.0', async (t) => {
  const analyze = toolOrSkip(t, 'systemd-analyze');
  if (analyze === null) return;
  const res = await run(analyze, ['security', '--offline=yes', '--no-pager', UNIT]);
  const out = `${res.stdout}\n${res.stderr}`;
  const m = /Overall exposure level for mssante-policyd\.service: (\d+(?:\.\d+)?)/.exec(out);
  assert.ok(m, `no exposure level in:\n${out}`);
  const exposure = Number(m[1]);
  t.diagnostic(`systemd-analyze security exposure: ${exposure} (threshold ${MAX_EXPOSURE})`);
  for (const line of out.split('\n').filter((l) => l.startsWith('✗'))) t.diagnostic(line.replace(/\s{2,}/g, '  '));
  assert.ok(exposure < MAX_EXPOSURE, `exposure ${exposure} >= ${MAX_EXPOSURE}\n${out}`);
});

test('systemd-analyze verify: no unknown or invalid setting', async (t) => {
  const analyze = toolOrSkip(t, 'systemd-analyze');
  if (analyze === null) return;
  // verify also wants ExecStart's binary to exist: point it at one that does, keep every other line.
  const dir = mkdtempSync(join(tmpdir(), 'mssante-unit-'));
  const copy = join(dir, 'mssante-policyd.service');
  writeFileSync(copy, readFileSync(UNIT, 'utf8').replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
  const res = await run(analyze, ['verify', '--no-pager', copy]);
  const complaints = `${res.stdout}\n${res.stderr}`.split('\n').filter((l) => l.includes('mssante-policyd.service'));
  assert.deepEqual(complaints, []);
  assert.equal(res.code, 0, res.stderr);
});

test('the unit runs the documented command, and the daemon accepts it', async () => {
  const unit = unitSettings(readFileSync(UNIT, 'utf8'));
  const execStart = one(unit, 'ExecStart').split(/\s+/);
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { bin: Record<string, string> };
  assert.equal(execStart[0], '/usr/bin/mssante-policyd');
  assert.ok(Object.hasOwn(pkg.bin, 'mssante-policyd'), 'the package installs that bin');
  assert.deepEqual(execStart.slice(1, 4), ['serve', '--config', '/etc/mssante-policyd/config.json']);

  // The state dir systemd creates (and hands to the dynamic user) is the one the daemon uses.
  assert.equal(one(unit, 'StateDirectory'), 'mssante-policyd');
  assert.equal(one(unit, 'ConfigurationDirectory'), 'mssante-policyd');
  assert.equal(execStart[execStart.indexOf('--state-dir') + 1], '/var/lib/mssante-policyd');

  // Same command line, the config file swapped for a temp one: it must parse and resolve.
  const dir = mkdtempSync(join(tmpdir(), 'mssante-unit-'));
  const config = join(dir, 'config.json');
  // A config that forgot `whitelist` is refused, never served the demo list (every real mail would get 550).
  writeFileSync(config, JSON.stringify({ 'policy-listen': '127.0.0.1:10040', 'http-listen': '127.0.0.1:9464' }));
  const args = execStart.slice(1).map((a) => (a === '/etc/mssante-policyd/config.json' ? config : a));
  const forgot = await run(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli.ts'), ...args, '--print-config']);
  assert.equal(forgot.code, 2);
  assert.match(forgot.stderr, /no whitelist given/);
  writeFileSync(
    config,
    JSON.stringify({
      whitelist: 'https://listeblanche.example/liste.xml',
      signer: ['/etc/mssante-policyd/signer.pem'],
      'policy-listen': '127.0.0.1:10040',
      'http-listen': '127.0.0.1:9464',
    }),
  );
  const res = await run(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli.ts'), ...args, '--print-config']);
  assert.equal(res.code, 0, res.stderr);
  const effective = JSON.parse(res.stdout) as { stateDir: string; policyListen: string };
  assert.equal(effective.stateDir, '/var/lib/mssante-policyd');
  assert.equal(effective.policyListen, '127.0.0.1:10040');
});

test('reload is SIGHUP, and stop leaves the daemon its drain time', () => {
  const unit = unitSettings(readFileSync(UNIT, 'utf8'));
  assert.equal(one(unit, 'ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.equal(one(unit, 'KillSignal'), 'SIGTERM');
  const grace = SETTINGS.find((s) => s.key === 'shutdown-grace')?.default;
  assert.equal(typeof grace, 'number');
  const stopSec = Number(one(unit, 'TimeoutStopSec'));
  // systemd sends SIGKILL at TimeoutStopSec: it must come after the daemon's own drain deadline.
  assert.ok(stopSec > (grace as number), `TimeoutStopSec=${stopSec} must exceed --shutdown-grace ${String(grace)}`);
  // Trace lines reach journald whole and with their priority (the daemon's <N> prefix).
  assert.equal(one(unit, 'LogRateLimitIntervalSec'), '0');
  assert.equal(one(unit, 'SyslogLevelPrefix'), 'yes');
  assert.equal(SETTINGS.find((s) => s.key === 'log-format')?.default, 'auto');
  // Node's JIT needs W+X pages: this setting would kill the daemon at start.
  assert.equal(unit.get('MemoryDenyWriteExecute'), undefined);
});

// The socket layout for a chrooted Postfix (deploy/systemd/postfix-socket/): same sandbox, fixed user.
const SOCKET_UNIT = join(REPO, 'deploy', 'systemd', 'postfix-socket', 'mssante-policyd.service');

test('postfix-socket unit: systemd-analyze security below 2.0, and verify passes', async (t) => {
  const analyze = toolOrSkip(t, 'systemd-analyze');
  if (analyze === null) return;
  const res = await run(analyze, ['security', '--offline=yes', '--no-pager', SOCKET_UNIT]);
  const m = /Overall exposure level for mssante-policyd\.service: (\d+(?:\.\d+)?)/.exec(`${res.stdout}\n${res.stderr}`);
  assert.ok(m, `no exposure level in:\n${res.stdout}${res.stderr}`);
  t.diagnostic(`postfix-socket unit exposure: ${m[1]} (threshold ${MAX_EXPOSURE})`);
  assert.ok(Number(m[1]) < MAX_EXPOSURE, `exposure ${m[1]} >= ${MAX_EXPOSURE}`);
  const dir = mkdtempSync(join(tmpdir(), 'mssante-unit-'));
  const copy = join(dir, 'mssante-policyd.service');
  writeFileSync(copy, readFileSync(SOCKET_UNIT, 'utf8').replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
  const verify = await run(analyze, ['verify', '--no-pager', copy]);
  assert.deepEqual(
    `${verify.stdout}\n${verify.stderr}`.split('\n').filter((l) => l.includes('mssante-policyd.service')),
    [],
  );
});

test('postfix-socket unit: the packaged unit run as postfix, listening in the chroot; the daemon accepts it', async () => {
  const main = unitSettings(readFileSync(UNIT, 'utf8'));
  const unit = unitSettings(readFileSync(SOCKET_UNIT, 'utf8'));
  assert.equal(unit.get('DynamicUser'), undefined);
  assert.equal(one(unit, 'User'), 'postfix');
  assert.equal(one(unit, 'Group'), 'postfix');
  assert.equal(one(unit, 'ReadWritePaths'), '/var/spool/postfix/private');
  const socket = '/var/spool/postfix/private/mssante-policyd';
  assert.equal(one(unit, 'ExecStart'), `${one(main, 'ExecStart')} --policy-listen unix:${socket} --socket-mode 0660`);
  // Every other setting is the packaged unit's.
  for (const [key, values] of main) {
    if (['ExecStart', 'DynamicUser'].includes(key)) continue;
    assert.deepEqual(unit.get(key), values, key);
  }
  const dir = mkdtempSync(join(tmpdir(), 'mssante-unit-'));
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      whitelist: 'https://listeblanche.example/liste.xml',
      signer: ['/etc/mssante-policyd/signer.pem'],
      'http-listen': '127.0.0.1:9464',
    }),
  );
  const args = one(unit, 'ExecStart')
    .split(/\s+/)
    .slice(1)
    .map((a) => (a === '/etc/mssante-policyd/config.json' ? config : a));
  const res = await run(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'cli.ts'), ...args, '--print-config']);
  assert.equal(res.code, 0, res.stderr);
  const effective = JSON.parse(res.stdout) as { policyListen: string; socketMode: number };
  assert.equal(effective.policyListen, `unix:${socket}`);
  assert.equal(effective.socketMode, 0o660);
});

// Socket activation (deploy/systemd/*.socket): systemd holds the policy socket across restarts.
const SOCKETS = [
  { socket: join(REPO, 'deploy', 'systemd', 'mssante-policyd.socket'), service: UNIT },
  { socket: join(REPO, 'deploy', 'systemd', 'postfix-socket', 'mssante-policyd.socket'), service: SOCKET_UNIT },
];

test('.socket units: systemd-analyze verify passes with the service they activate', async (t) => {
  const analyze = toolOrSkip(t, 'systemd-analyze');
  if (analyze === null) return;
  for (const { socket, service } of SOCKETS) {
    const dir = mkdtempSync(join(tmpdir(), 'mssante-unit-'));
    writeFileSync(join(dir, 'mssante-policyd.socket'), readFileSync(socket, 'utf8'));
    writeFileSync(
      join(dir, 'mssante-policyd.service'),
      readFileSync(service, 'utf8').replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`),
    );
    const res = await run(analyze, [
      'verify',
      '--no-pager',
      join(dir, 'mssante-policyd.socket'),
      join(dir, 'mssante-policyd.service'),
    ]);
    const complaints = `${res.stdout}\n${res.stderr}`.split('\n').filter((l) => l.includes('mssante-policyd.'));
    assert.deepEqual(complaints, [], socket);
    assert.equal(res.code, 0, `${socket}: ${res.stderr}`);
  }
});

test('.socket units: named for the listener they feed, at the address the service would bind', () => {
  for (const { socket, service } of SOCKETS) {
    const s = unitSettings(readFileSync(socket, 'utf8'));
    const unit = unitSettings(readFileSync(service, 'utf8'));
    assert.equal(one(s, 'FileDescriptorName'), 'policy', socket);
    assert.ok(ACTIVATION_NAMES.includes(one(s, 'FileDescriptorName')));
    assert.equal(one(s, 'Service'), 'mssante-policyd.service');
    const execStart = one(unit, 'ExecStart').split(/\s+/);
    const flag = execStart.indexOf('--policy-listen');
    const policyListen = flag === -1 ? SETTINGS.find((x) => x.key === 'policy-listen')?.default : execStart[flag + 1];
    // Without the socket unit the service binds this same address itself.
    assert.equal(one(s, 'ListenStream'), String(policyListen).replace(/^unix:/, ''), socket);
    // Readiness through systemd-notify, a child of the daemon: only NotifyAccess=all lets it speak.
    assert.equal(one(unit, 'Type'), 'notify');
    assert.equal(one(unit, 'NotifyAccess'), 'all');
  }
  const chroot = unitSettings(readFileSync(SOCKETS[1]!.socket, 'utf8'));
  assert.equal(one(chroot, 'SocketGroup'), 'postfix');
  assert.equal(one(chroot, 'SocketMode'), '0660');
});
