import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync, lstatSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULT_UNIX_SOCKET_MODE } from '../../../src/listener-defaults.js';
import { ListenAddressError, formatAddress, listen, parseListenAddress, resolveId } from '../../../src/net/listen.js';

function closeServer(server: net.Server): Promise<void> {
  return new Promise((ok) => server.close(() => ok()));
}

function connects(path: string): Promise<boolean> {
  return new Promise((ok) => {
    const s = net.connect({ path });
    s.once('connect', () => (s.destroy(), ok(true)));
    s.once('error', () => ok(false));
  });
}

/** A socket file left by a process killed while listening (nothing accepts on it any more). */
async function staleSocket(path: string): Promise<void> {
  const child = spawn(
    process.execPath,
    ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`],
    { stdio: 'ignore' },
  );
  await new Promise((ok) => child.once('exit', ok));
  assert.ok(lstatSync(path).isSocket(), 'the killed process left its socket file');
  assert.equal(await connects(path), false, 'nothing answers on it');
}

describe('listen addresses', () => {
  it('parses host:port, [v6]:port and unix:/path', () => {
    assert.deepEqual(parseListenAddress('127.0.0.1:10040'), { kind: 'tcp', host: '127.0.0.1', port: 10040 });
    assert.deepEqual(parseListenAddress('localhost:0'), { kind: 'tcp', host: 'localhost', port: 0 });
    assert.deepEqual(parseListenAddress('[::1]:10040'), { kind: 'tcp', host: '::1', port: 10040 });
    assert.deepEqual(parseListenAddress('[::]:25'), { kind: 'tcp', host: '::', port: 25 });
    assert.deepEqual(parseListenAddress('unix:/run/mssante-policyd/policy.sock'), {
      kind: 'unix',
      path: '/run/mssante-policyd/policy.sock',
    });
    assert.deepEqual(parseListenAddress('unix:relative.sock'), { kind: 'unix', path: 'relative.sock' });
  });

  it('formats what it parses back to the same text', () => {
    for (const text of ['127.0.0.1:10040', '[::1]:10040', 'unix:/tmp/p.sock', 'mx.example.fr:65535']) {
      assert.equal(formatAddress(parseListenAddress(text)), text);
    }
  });

  for (const bad of [
    '',
    '10040',
    '127.0.0.1',
    '127.0.0.1:',
    ':10040',
    '::1:10040',
    '[::1]10040',
    '[::1',
    '[nothost]:1',
    '127.0.0.1:65536',
    '127.0.0.1:-1',
    '127.0.0.1:1e3',
    'unix:',
    'inet:127.0.0.1:10040',
    `unix:/${'x'.repeat(120)}`,
    'a b:1',
  ]) {
    it(`refuses ${JSON.stringify(bad)} with a clear error`, () => {
      assert.throws(
        () => parseListenAddress(bad),
        (err: unknown) => err instanceof ListenAddressError && /expected host:port/.test(err.message),
      );
    });
  }

  it('never replaces a file that is not a socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'listen-'));
    try {
      const path = join(dir, 'not-a-socket');
      writeFileSync(path, 'keep me');
      await assert.rejects(listen(net.createServer(), { kind: 'unix', path }), /not a socket/);
      assert.equal(existsSync(path), true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports the real port when 0 is asked', async () => {
    const server = net.createServer();
    const bound = await listen(server, { kind: 'tcp', host: '127.0.0.1', port: 0 });
    assert.equal(bound.address.kind, 'tcp');
    assert.ok(bound.address.kind === 'tcp' && bound.address.port > 0);
    await new Promise((r) => server.close(r));
    await bound.release();
  });

  it('rejects when the TCP port is taken', async () => {
    const first = net.createServer();
    const bound = await listen(first, { kind: 'tcp', host: '127.0.0.1', port: 0 });
    const port = bound.address.kind === 'tcp' ? bound.address.port : -1;
    await assert.rejects(listen(net.createServer(), { kind: 'tcp', host: '127.0.0.1', port }), /EADDRINUSE/);
    await new Promise((r) => first.close(r));
  });
});

describe('unix socket files', () => {
  const withDir = async (fn: (dir: string) => Promise<void>): Promise<void> => {
    const dir = mkdtempSync(join(tmpdir(), 'listen-unix-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('get the mode asked (the daemon passes --socket-mode, 0660 by default in SETTINGS)', async () => {
    await withDir(async (dir) => {
      for (const [mode, expected] of [
        [DEFAULT_UNIX_SOCKET_MODE, 0o660],
        [0o600, 0o600],
        [0o666, 0o666],
      ] as const) {
        const path = join(dir, `m${expected.toString(8)}.sock`);
        const server = net.createServer();
        const bound = await listen(server, { kind: 'unix', path }, { unixMode: mode });
        assert.equal(lstatSync(path).mode & 0o7777, expected);
        assert.equal(await connects(path), true);
        await closeServer(server);
        await bound.release();
        assert.equal(existsSync(path), false, 'released');
      }
    });
  });

  it('get the owner and group asked, by name or by number (root only: chown)', async (t) => {
    if (process.getuid?.() !== 0) {
      t.skip('changing a file owner needs root');
      return;
    }
    const nobody = await resolveId('passwd', 'nobody');
    const nogroup = await resolveId('group', 'nogroup');
    await withDir(async (dir) => {
      const path = join(dir, 'owned.sock');
      const server = net.createServer();
      await listen(server, { kind: 'unix', path }, { unixOwner: 'nobody', unixGroup: 'nogroup', unixMode: 0o660 });
      const st = lstatSync(path);
      assert.equal(st.uid, nobody);
      assert.equal(st.gid, nogroup);
      assert.equal(st.mode & 0o777, 0o660);
      await closeServer(server);
      const path2 = join(dir, 'numeric.sock');
      const server2 = net.createServer();
      await listen(server2, { kind: 'unix', path: path2 }, { unixGroup: String(nogroup) });
      assert.equal(lstatSync(path2).gid, nogroup);
      assert.equal(lstatSync(path2).uid, 0, 'owner untouched when not asked');
      await closeServer(server2);
    });
  });

  it('refuse an unknown owner or group before binding: no socket file is left', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'typo.sock');
      await assert.rejects(
        listen(net.createServer(), { kind: 'unix', path }, { unixGroup: 'no-such-group-mssante' }),
        /unknown group "no-such-group-mssante"/,
      );
      await assert.rejects(
        listen(net.createServer(), { kind: 'unix', path }, { unixOwner: 'no-such-user-mssante' }),
        /unknown user "no-such-user-mssante"/,
      );
      await assert.rejects(listen(net.createServer(), { kind: 'unix', path }, { unixOwner: '-rf' }), /invalid user name/);
      assert.equal(existsSync(path), false);
    });
  });

  it('replace a stale socket file left by a killed process', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'stale.sock');
      await staleSocket(path);
      const server = net.createServer((c) => c.on('error', () => {}).end());
      await listen(server, { kind: 'unix', path });
      assert.equal(await connects(path), true);
      await closeServer(server);
    });
  });

  it('leave a socket that another process still serves, and report it in use', async () => {
    await withDir(async (dir) => {
      const path = join(dir, 'busy.sock');
      const other = net.createServer();
      await listen(other, { kind: 'unix', path });
      await assert.rejects(listen(net.createServer(), { kind: 'unix', path }), /in use by another process/);
      assert.equal(await connects(path), true, 'the other process still answers');
      await closeServer(other);
    });
  });

  it('never replace a symbolic link, even one pointing at a stale socket', async () => {
    await withDir(async (dir) => {
      const target = join(dir, 'stale.sock');
      await staleSocket(target);
      const link = join(dir, 'link.sock');
      symlinkSync(target, link);
      await assert.rejects(listen(net.createServer(), { kind: 'unix', path: link }), /not a socket/);
      assert.ok(lstatSync(link).isSymbolicLink());
      assert.ok(lstatSync(target).isSocket());
    });
  });
});
