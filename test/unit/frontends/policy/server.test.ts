import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { type PolicyRequest } from '../../../../src/frontends/policy/codec.js';
import { startPolicyServer, type ConnectionInfo, type PolicyServerOptions } from '../../../../src/frontends/policy/server.js';
import type { ListenerHandle } from '../../../../src/net/stream-server.js';
import { createMetrics, type Metrics } from '../../../../src/observe/metrics.js';
import { POLICY_ACTIONS } from '../../../../src/trust/reasons.js';
import { LISTENER_DEFAULTS } from '../../../../src/listener-defaults.js';
import { DEFAULT_POLICY_LIMITS } from '../../../../src/listener-defaults.js';

/** Safety net against a hung test, not a timing assertion. */
const WAIT_LIMIT_MS = 5000;

interface Harness {
  server: ListenerHandle;
  metrics: Metrics;
  logs: Array<Record<string, unknown>>;
  logText: () => string;
  seen: ConnectionInfo[];
}

const servers: ListenerHandle[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close(100)));
});

/** Echoes `seq` so that the order of replies shows; throws when asked to. */
function echo(request: PolicyRequest): string {
  if (request.has('boom')) throw new Error('handler exploded');
  return `DUNNO seq=${request.get('seq') ?? '-'}`;
}

async function start(options: Partial<PolicyServerOptions> = {}, listen = '127.0.0.1:0'): Promise<Harness> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(
        ...String(chunk)
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const seen: ConnectionInfo[] = [];
  const server = await startPolicyServer(listen, {
    ...LISTENER_DEFAULTS.policy,
    logger: pino({ level: 'debug' }, sink),
    metrics,
    handle: (request, connection) => {
      seen.push(connection);
      return echo(request);
    },
    ...options,
  });
  servers.push(server);
  return {
    server,
    metrics,
    seen,
    get logs() {
      return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    logText: () => lines.join('\n'),
  };
}

class Client {
  #chunks: string[] = [];
  /** Complete replies so far, counted as data arrives (rescanning megabytes on every chunk would be slow). */
  replyCount = 0;
  #lf = 0;
  ended = false;
  closed = false;
  readonly socket: net.Socket;
  #waiters: Array<() => void> = [];

  constructor(address: string) {
    this.socket = address.startsWith('unix:')
      ? net.connect({ path: address.slice(5) })
      : net.connect(portOf(address), '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      const text = d.toString('utf8');
      this.#chunks.push(text);
      // A reply holds exactly two LF (action=...\n\n, the action never holds one).
      for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) this.#lf++;
      this.replyCount = this.#lf >> 1;
      this.#wake();
    });
    this.socket.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    this.socket.on('error', () => {});
  }

  get data(): string {
    return this.#chunks.join('');
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }

  until(what: string, cond: () => boolean): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.data)}`)),
        WAIT_LIMIT_MS,
      );
      const check = (): void => {
        if (cond()) {
          clearTimeout(timer);
          this.#waiters = this.#waiters.filter((w) => w !== check);
          resolve();
        }
      };
      this.#waiters.push(check);
    });
  }

  connected(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.socket.connecting) return resolve();
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
  }

  replies(): string[] {
    return this.data.split('\n\n').filter((r) => r !== '');
  }

  async waitReplies(n: number): Promise<string[]> {
    await this.until(`${n} replies`, () => this.replyCount >= n || this.closed);
    return this.replies();
  }

  waitClosed(): Promise<void> {
    return this.until('close', () => this.closed);
  }

  send(text: string | Buffer): void {
    this.socket.write(text);
  }
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

function request(seq: number | string, extra = ''): string {
  return `request=smtpd_access_policy\nprotocol_state=RCPT\nseq=${seq}\n${extra}\n`;
}

async function metricValue(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === `mssante_policyd_${name}`);
  const values = (metric?.values ?? []) as Array<{ value: number; labels: Record<string, string | number> }>;
  const found = values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return found?.value ?? 0;
}

async function eventually(what: string, cond: () => Promise<boolean> | boolean): Promise<void> {
  const stop = Date.now() + WAIT_LIMIT_MS;
  while (!(await cond())) {
    if (Date.now() > stop) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('policy server', () => {
  it('defaults outlast Postfix: idle > 300 s (smtpd_policy_service_max_idle), request > 100 s (smtpd_policy_service_timeout)', () => {
    assert.ok(LISTENER_DEFAULTS.policy.idleTimeoutMs > 300_000);
    assert.ok(LISTENER_DEFAULTS.policy.requestTimeoutMs > 100_000);
    assert.equal(LISTENER_DEFAULTS.policy.limits, DEFAULT_POLICY_LIMITS);
    assert.equal(LISTENER_DEFAULTS.policy.limits.maxLineBytes, 8192); // Postfix's 8 KiB attribute strings
    assert.equal(LISTENER_DEFAULTS.policy.maxConnections, 1000);
  });

  it('binds port 0 to a real port and answers several requests on one connection, in order', async () => {
    const h = await start();
    assert.match(h.server.address, /^127\.0\.0\.1:[1-9][0-9]*$/);
    const c = new Client(h.server.address);
    for (let i = 1; i <= 3; i++) {
      c.send(request(i));
      await c.waitReplies(i);
    }
    assert.deepEqual(c.replies(), ['action=DUNNO seq=1', 'action=DUNNO seq=2', 'action=DUNNO seq=3']);
    assert.equal(c.closed, false);
    assert.ok(h.seen.every((s) => s.id === h.seen[0]?.id && /^127\.0\.0\.1:\d+$/.test(s.remote)));
    c.socket.destroy();
  });

  it('answers pipelined requests in order, whether they come in one write or byte by byte', async () => {
    const h = await start();
    const c = new Client(h.server.address);
    const all = Array.from({ length: 20 }, (_, i) => request(i)).join('');
    c.send(all);
    await c.waitReplies(20);
    const bytes = Buffer.from(all);
    await c.connected();
    for (let i = 0; i < bytes.length; i += 3) c.send(bytes.subarray(i, i + 3));
    const replies = await c.waitReplies(40);
    assert.deepEqual(replies, [
      ...Array.from({ length: 20 }, (_, i) => `action=DUNNO seq=${i}`),
      ...Array.from({ length: 20 }, (_, i) => `action=DUNNO seq=${i}`),
    ]);
    c.socket.destroy();
  });

  it('answers a burst of requests from a few repeated actions, every reply intact (reply bytes are shared)', async () => {
    const actions = ['DUNNO', '550 5.7.1 refus / refused', '451 4.3.0 retry'];
    const h = await start({ handle: (r) => actions[Number(r.get('seq')) % actions.length] ?? 'DUNNO' });
    const c = new Client(h.server.address);
    c.send(Array.from({ length: 300 }, (_, i) => request(i)).join(''));
    const replies = await c.waitReplies(300);
    assert.deepEqual(
      replies,
      Array.from({ length: 300 }, (_, i) => `action=${actions[i % actions.length]}`),
    );
    c.socket.destroy();
  });

  it('serves Exim readsocket: request without the empty line, half-close, one reply then EOF', async () => {
    const h = await start();
    for (const body of ['request=smtpd_access_policy\nseq=exim\n', 'request=smtpd_access_policy\nseq=exim']) {
      const c = new Client(h.server.address);
      c.socket.end(body);
      await c.waitClosed();
      assert.equal(c.data, 'action=DUNNO seq=exim\n\n');
      assert.equal(c.ended, true);
    }
    // With the empty line too: answered once, not twice.
    const c = new Client(h.server.address);
    c.socket.end(request('full'));
    await c.waitClosed();
    assert.equal(c.data, 'action=DUNNO seq=full\n\n');
  });

  it('keeps every reply, in order, for a client that stops reading while it pipelines', async () => {
    const big = 'x'.repeat(16_000);
    const h = await start({ handle: (r) => `DUNNO ${r.get('seq')} ${big}` });
    const c = new Client(h.server.address);
    c.socket.pause();
    const n = 500; // 8 MB of replies: more than socket buffers hold, so the server must stop reading
    c.send(Array.from({ length: n }, (_, i) => request(i)).join(''));
    await new Promise((r) => setTimeout(r, 100));
    c.socket.resume();
    const replies = await c.waitReplies(n);
    assert.equal(replies.length, n);
    assert.ok(replies.every((r, i) => r === `action=DUNNO ${i} ${big}`));
    c.socket.destroy();
  });

  it('closes a connection that sends a malformed request, without a reply, and serves the others', async () => {
    const h = await start();
    const good = new Client(h.server.address);
    const bad = new Client(h.server.address);
    good.send(request(1));
    await good.waitReplies(1);
    bad.send('request=smtpd_access_policy\nEVIL\u0007MARKER with no equals\n\n');
    await bad.waitClosed();
    assert.equal(bad.data, '');
    good.send(request(2));
    assert.deepEqual(await good.waitReplies(2), ['action=DUNNO seq=1', 'action=DUNNO seq=2']);
    assert.equal(await metricValue(h.metrics, 'protocol_errors_total', { frontend: 'policy', kind: 'malformed_line' }), 1);
    const warn = h.logs.find((l) => l.kind === 'malformed_line');
    assert.ok(warn, 'one warn line with the kind');
    assert.equal(warn.level, 40);
    assert.equal(typeof warn.conn, 'number');
    assert.match(String(warn.remote), /^127\.0\.0\.1:\d+$/);
    assert.doesNotMatch(h.logText(), /MARKER/);
    good.socket.destroy();
  });

  it('closes a connection whose line exceeds the limit before it ends', async () => {
    const h = await start({ limits: { ...DEFAULT_POLICY_LIMITS, maxLineBytes: 64 } });
    const c = new Client(h.server.address);
    c.send(`sender=${'x'.repeat(100)}`); // no LF: the limit applies to a line still arriving
    await c.waitClosed();
    assert.equal(c.data, '');
    assert.equal(await metricValue(h.metrics, 'protocol_errors_total', { frontend: 'policy', kind: 'line_too_long' }), 1);
  });

  it('enforces maxConnections: the extra connection is closed at once and counted', async () => {
    const h = await start({ maxConnections: 2 });
    const a = new Client(h.server.address);
    const b = new Client(h.server.address);
    a.send(request('a'));
    b.send(request('b'));
    await a.waitReplies(1);
    await b.waitReplies(1);
    const extra = new Client(h.server.address);
    extra.send(request('extra'));
    await extra.waitClosed();
    assert.equal(extra.data, '');
    assert.equal(await metricValue(h.metrics, 'connections_rejected_total', { frontend: 'policy' }), 1);
    assert.equal(await metricValue(h.metrics, 'connections_active', { frontend: 'policy' }), 2);
    a.socket.destroy();
    await eventually(
      'a slot to free',
      async () => (await metricValue(h.metrics, 'connections_active', { frontend: 'policy' })) === 1,
    );
    const again = new Client(h.server.address);
    again.send(request('again'));
    assert.deepEqual(await again.waitReplies(1), ['action=DUNNO seq=again']);
    again.socket.destroy();
    b.socket.destroy();
    await eventually(
      'no connection left',
      async () => (await metricValue(h.metrics, 'connections_active', { frontend: 'policy' })) === 0,
    );
  });

  it('closes an idle connection quietly', async () => {
    const h = await start({ idleTimeoutMs: 150 });
    const c = new Client(h.server.address);
    c.send(request(1));
    await c.waitReplies(1);
    await c.waitClosed();
    assert.equal(c.data, 'action=DUNNO seq=1\n\n');
    assert.ok(h.logs.some((l) => l.level === 20 && /idle/.test(String(l.msg))));
    assert.ok(!h.logs.some((l) => (l.level as number) >= 40));
  });

  it('closes a connection whose request does not complete in time', async () => {
    const h = await start({ requestTimeoutMs: 150 });
    const c = new Client(h.server.address);
    c.send('request=smtpd_access_policy\nsender=slow@');
    await c.waitClosed();
    assert.equal(c.data, '');
    assert.equal(await metricValue(h.metrics, 'protocol_errors_total', { frontend: 'policy', kind: 'request_timeout' }), 1);
  });

  it('answers the internal_error action when the handler throws, and keeps the connection', async () => {
    const h = await start();
    const c = new Client(h.server.address);
    c.send(request(1, 'boom=1\n') + request(2));
    const replies = await c.waitReplies(2);
    assert.deepEqual(replies, [`action=${POLICY_ACTIONS.internal_error}`, 'action=DUNNO seq=2']);
    assert.match(POLICY_ACTIONS.internal_error, /^451 4\.3\.0 /);
    assert.ok(h.logs.some((l) => l.level === 50 && /handler/.test(String(l.msg))));
    c.socket.destroy();
  });

  it('listens on a unix socket (mode 0660), replaces a stale socket file and removes it on close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'policyd-'));
    const path = join(dir, 'policy.sock');
    // A stale socket: its process dies (SIGKILL) without removing it.
    const script = `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
    assert.throws(() => execFileSync(process.execPath, ['-e', script], { stdio: 'ignore' }), /SIGKILL/);
    assert.ok(statSync(path).isSocket(), 'stale socket left behind');
    const h = await start({}, `unix:${path}`);
    assert.equal(h.server.address, `unix:${path}`);
    assert.equal(statSync(path).mode & 0o777, 0o660);
    const c = new Client(h.server.address);
    c.send(request('unix'));
    assert.deepEqual(await c.waitReplies(1), ['action=DUNNO seq=unix']);
    assert.equal(h.seen[0]?.remote, 'unix');
    // A second server on the same live socket is refused, not allowed to steal it.
    await assert.rejects(start({}, `unix:${path}`), /in use/);
    c.socket.destroy();
    await h.server.close(1000);
    assert.equal(existsSync(path), false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('close() stops accepting, ends idle connections, finishes a request in progress, then resolves', async () => {
    const h = await start();
    const idle = new Client(h.server.address);
    const busy = new Client(h.server.address);
    idle.send(request('idle'));
    await idle.waitReplies(1);
    // One write: the reply to the first request shows the server holds the start of the second.
    busy.send(request('first') + 'request=smtpd_access_policy\nseq=busy\n');
    await busy.waitReplies(1);
    let closed = false;
    const closing = h.server.close(WAIT_LIMIT_MS).then(() => {
      closed = true;
    });
    await idle.until('EOF from the server', () => idle.ended);
    idle.socket.end();
    await assert.rejects(
      new Promise((resolve, reject) =>
        net.connect(portOf(h.server.address), '127.0.0.1').once('connect', resolve).once('error', reject),
      ),
      /ECONNREFUSED/,
    );
    assert.equal(closed, false, 'waits for the request in progress');
    busy.send('\n');
    assert.deepEqual(await busy.waitReplies(2), ['action=DUNNO seq=first', 'action=DUNNO seq=busy']);
    await busy.until('EOF after the reply', () => busy.ended);
    busy.socket.end();
    await closing;
    assert.equal(await metricValue(h.metrics, 'connections_active', { frontend: 'policy' }), 0);
  });

  it('close() destroys what is left at the deadline', async () => {
    const h = await start();
    const stalled = new Client(h.server.address);
    stalled.send(request('first') + 'request=smtpd_access_policy\nseq=never-finished');
    await stalled.waitReplies(1);
    await h.server.close(100);
    await stalled.waitClosed();
    assert.equal(stalled.data, 'action=DUNNO seq=first\n\n');
    assert.ok(h.logs.some((l) => /deadline/.test(String(l.msg))));
  });
});
