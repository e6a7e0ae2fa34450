/**
 * A private redis-server (the Debian package) for tests: its own port, directory and config, no
 * persistence; optionally a password (requirepass), an ACL user, or TLS only (tls-port, a test CA).
 * kill() stops it abruptly (a store that dies mid-flood); start() brings it back on the same port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { freePort } from './daemon.js';
import { TestPki, type Issued } from './pki.js';
import { toolOrSkip } from './tools.js';

const READY_TIMEOUT_MS = 60_000;

export interface RedisOptions {
  /** requirepass: the default user's password. */
  readonly password?: string;
  /** An ACL user with this password, allowed our keys and the commands we use (the default user stays off). */
  readonly aclUser?: { readonly name: string; readonly password: string };
  /** TLS only: the plain port is closed; the server certificate is issued by `ca` (see redisTestCa). */
  readonly tls?: { readonly ca: Issued; readonly server: Issued };
}

export interface RedisInstance {
  readonly port: number;
  /** redis://127.0.0.1:port or rediss://localhost:port (the name the test certificate carries). */
  readonly url: string;
  readonly logs: string[];
  /** Starts the server (again, same port and config); resolves once it accepts connections. */
  start(): Promise<void>;
  /** SIGKILL: the store is gone at once, as in a crash. */
  kill(): Promise<void>;
  /** A client as the test sees the store (same credentials as the daemon's). */
  client(): Redis;
  stop(): Promise<void>;
}

/** A CA and a server certificate for `localhost`, for a TLS redis-server. */
export function redisTestCa(): { ca: Issued; server: Issued } {
  const pki = new TestPki();
  const ca = pki.createCa('store-ca', [['CN', 'Test store CA']]);
  const server = pki.issue('store-server', [['CN', 'localhost']], ca, { usage: 'server', dnsNames: ['localhost'] });
  return { ca, server };
}

/** A running private redis-server, or null after skipping the test (CI=true: a failure). */
export async function startRedis(t: TestContext, options: RedisOptions = {}): Promise<RedisInstance | null> {
  const binary = toolOrSkip(t, 'redis-server');
  if (binary === null) return null;
  const dir = mkdtempSync(join(tmpdir(), 'mssante-redis-'));
  const port = await freePort();
  const lines = ['bind 127.0.0.1', 'protected-mode no', `dir ${dir}`, 'save ""', 'appendonly no', 'logfile ""', 'daemonize no'];
  if (options.tls !== undefined) {
    lines.push(
      'port 0',
      `tls-port ${port}`,
      `tls-cert-file ${options.tls.server.certPath}`,
      `tls-key-file ${options.tls.server.keyPath}`,
      `tls-ca-cert-file ${options.tls.ca.certPath}`,
      'tls-auth-clients no',
    );
  } else {
    lines.push(`port ${port}`);
  }
  if (options.password !== undefined) lines.push(`requirepass ${options.password}`);
  if (options.aclUser !== undefined) {
    lines.push('user default off');
    lines.push(`user ${options.aclUser.name} on >${options.aclUser.password} ~mssante-policyd:* +@all`);
  }
  const config = join(dir, 'redis.conf');
  writeFileSync(config, `${lines.join('\n')}\n`, { mode: 0o600 });
  const logs: string[] = [];
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();

  const instance: RedisInstance = {
    port,
    url: options.tls !== undefined ? `rediss://localhost:${port}` : `redis://127.0.0.1:${port}`,
    logs,
    async start() {
      const proc = spawn(binary, [config], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = proc;
      exited = new Promise((ok) => proc.once('exit', () => ok()));
      const ready = new Promise<void>((ok, fail) => {
        const timer = setTimeout(() => fail(new Error(`redis-server not ready:\n${logs.join('\n')}`)), READY_TIMEOUT_MS);
        const onData = (chunk: Buffer): void => {
          for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(line);
          if (/Ready to accept connections/.test(chunk.toString('utf8'))) {
            clearTimeout(timer);
            ok();
          }
        };
        proc.stdout.on('data', onData);
        proc.stderr.on('data', onData);
        proc.once('exit', (code) => {
          clearTimeout(timer);
          fail(new Error(`redis-server exited (${code}):\n${logs.join('\n')}`));
        });
      });
      await ready;
    },
    async kill() {
      child?.kill('SIGKILL');
      await exited;
      child = null;
    },
    client() {
      return new Redis({
        host: options.tls !== undefined ? 'localhost' : '127.0.0.1',
        port,
        ...(options.aclUser !== undefined ? { username: options.aclUser.name, password: options.aclUser.password } : {}),
        ...(options.password !== undefined ? { password: options.password } : {}),
        ...(options.tls !== undefined ? { tls: { ca: options.tls.ca.certPem, servername: 'localhost' } } : {}),
        maxRetriesPerRequest: 1,
      });
    },
    async stop() {
      child?.kill('SIGTERM');
      await exited;
      child = null;
    },
  };
  process.once('exit', () => child?.kill('SIGKILL'));
  await instance.start();
  t.after(() => instance.stop());
  return instance;
}
