import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ListenAddressError, formatAddress, listen, parseListenAddress } from '../../src/net/listen.js';

describe('listen addresses', () => {
  it('parses host:port, [v6]:port and unix:/path', () => {
    assert.deepEqual(parseListenAddress('127.0.0.1:10040'), { kind: 'tcp', host: '127.0.0.1', port: 10040 });
    assert.deepEqual(parseListenAddress('localhost:0'), { kind: 'tcp', host: 'localhost', port: 0 });
    assert.deepEqual(parseListenAddress('[::1]:10040'), { kind: 'tcp', host: '::1', port: 10040 });
    assert.deepEqual(parseListenAddress('[::]:25'), { kind: 'tcp', host: '::', port: 25 });
    assert.deepEqual(parseListenAddress('unix:/run/mssante-policyd/policy.sock'), { kind: 'unix', path: '/run/mssante-policyd/policy.sock' });
    assert.deepEqual(parseListenAddress('unix:relative.sock'), { kind: 'unix', path: 'relative.sock' });
  });

  it('formats what it parses back to the same text', () => {
    for (const text of ['127.0.0.1:10040', '[::1]:10040', 'unix:/tmp/p.sock', 'mx.example.fr:65535']) {
      assert.equal(formatAddress(parseListenAddress(text)), text);
    }
  });

  for (const bad of ['', '10040', '127.0.0.1', '127.0.0.1:', ':10040', '::1:10040', '[::1]10040', '[::1', '[nothost]:1', '127.0.0.1:65536', '127.0.0.1:-1', '127.0.0.1:1e3', 'unix:', 'inet:127.0.0.1:10040', `unix:/${'x'.repeat(120)}`, 'a b:1']) {
    it(`refuses ${JSON.stringify(bad)} with a clear error`, () => {
      assert.throws(() => parseListenAddress(bad), (err: unknown) => err instanceof ListenAddressError && /expected host:port/.test(err.message));
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
