import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { decodeReply, encodeRequest, type SocketmapReply } from '../../../../src/frontends/socketmap/codec.js';
import { SocketmapTables } from '../../../../src/frontends/socketmap/maps.js';
import { startSocketmapServer, type SocketmapServerOptions } from '../../../../src/frontends/socketmap/server.js';
import type { ListenerHandle } from '../../../../src/net/stream-server.js';
import { createMetrics, type Metrics } from '../../../../src/observe/metrics.js';
import type { WhitelistIndex } from '../../../../src/whitelist/whitelist-index.js';
import { buildIndex } from '../../../support/index-builder.js';
import { LISTENER_DEFAULTS } from '../../../../src/listener-defaults.js';

/** Safety net against a hung test, not a timing assertion. */
const WAIT_LIMIT_MS = 10_000;
const INDEX = buildIndex([['ch-exemple.fr', 'CN=mx.operateur-a.fr,OU=318310021300028,O=OPERATEUR A,ST=Paris (75),C=FR']]);
const TABLES = new SocketmapTables({ tlsPolicy: 'secure match=hostname', transport: 'smtp-mssante:' });

const servers: ListenerHandle[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close(100)));
});

interface Harness {
  server: ListenerHandle;
  metrics: Metrics;
  logs: () => Array<Record<string, unknown>>;
  setIndex(index: WhitelistIndex | null): void;
}

async function start(options: Partial<SocketmapServerOptions> = {}, level = 'info', address = '127.0.0.1:0'): Promise<Harness> {
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
  let index: WhitelistIndex | null = INDEX;
  const server = await startSocketmapServer(address, {
    ...LISTENER_DEFAULTS.socketmap,
    logger: pino({ level }, sink),
    metrics,
    tables: TABLES,
    currentIndex: () => index,
    ...options,
  });
  servers.push(server);
  return {
    server,
    metrics,
    logs: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
    setIndex: (i) => (index = i),
  };
}

/** Sends bytes, collects replies until `count` arrived or the server closed. */
async function exchange(
  address: string,
  bytes: Buffer | Buffer[],
  count: number,
  endAfter = false,
): Promise<{ replies: SocketmapReply[]; closed: boolean }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const socket = net.connect(port, host);
  const replies: SocketmapReply[] = [];
  let buffer: Buffer = Buffer.alloc(0);
  let closed = false;
  await new Promise<void>((resolve, reject) => {
    const limit = setTimeout(
      () => reject(new Error(`no ${count} replies within ${WAIT_LIMIT_MS} ms (got ${replies.length})`)),
      WAIT_LIMIT_MS,
    );
    const done = (): void => {
      clearTimeout(limit);
      resolve();
    };
    socket.on('connect', () => {
      for (const b of Array.isArray(bytes) ? bytes : [bytes]) socket.write(b);
      if (endAfter) socket.end();
    });
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (let r = decodeReply(buffer); r !== null; r = decodeReply(buffer)) {
        replies.push(r.reply);
        buffer = r.rest;
      }
      if (replies.length >= count && !endAfter) done();
    });
    socket.on('close', () => {
      closed = true;
      done();
    });
    socket.on('error', () => undefined);
  });
  socket.destroy();
  return { replies, closed };
}

async function metricValue(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const json = await metrics.registry.getMetricsAsJSON();
  const metric = json.find((m) => m.name === name);
  const v = metric?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return Number(v?.value ?? NaN);
}

describe('socketmap server', () => {
  it('answers many requests on one connection, in order, and counts each lookup', async () => {
    const h = await start();
    const requests = [
      encodeRequest('mssante-transport', 'ch-exemple.fr'),
      encodeRequest('mssante-tls-policy', 'CH-EXEMPLE.FR.'),
      encodeRequest('mssante-domain', 'ch-exemple.fr'),
      encodeRequest('mssante-domain', 'gmail.com'),
      encodeRequest('mssante-recipient-access', 'x@gmail.com'),
      encodeRequest('mssante-nope', 'x'),
    ];
    const { replies } = await exchange(h.server.address, Buffer.concat(requests), requests.length);
    assert.deepEqual(
      replies.map((r) => `${r.status} ${r.text}`),
      [
        'OK smtp-mssante:',
        'OK secure match=hostname',
        'OK mx.operateur-a.fr',
        'NOTFOUND ',
        'OK REJECT 5.7.1 Domaine destinataire hors espace de confiance MSSante / recipient domain outside the MSSante trust space',
        'PERM unknown map name (maps: mssante-domain, mssante-tls-policy, mssante-transport, mssante-recipient-access)',
      ],
    );
    const lookups = 'mssante_policyd_socketmap_lookups_total';
    assert.equal(await metricValue(h.metrics, lookups, { map: 'mssante-domain', result: 'ok' }), 1);
    assert.equal(await metricValue(h.metrics, lookups, { map: 'mssante-domain', result: 'notfound' }), 1);
    assert.equal(await metricValue(h.metrics, lookups, { map: 'mssante-recipient-access', result: 'ok' }), 1);
    assert.equal(await metricValue(h.metrics, lookups, { map: 'unknown', result: 'perm' }), 1);
  });

  it('answers requests cut in one-byte writes', async () => {
    const h = await start();
    const bytes = Buffer.concat([
      encodeRequest('mssante-transport', 'ch-exemple.fr'),
      encodeRequest('mssante-transport', 'gmail.com'),
    ]);
    const chunks = [...bytes].map((b) => Buffer.from([b]));
    const { replies } = await exchange(h.server.address, chunks, 2);
    assert.deepEqual(
      replies.map((r) => r.status),
      ['OK', 'NOTFOUND'],
    );
  });

  it('answers TEMP while no list is in force', async () => {
    const h = await start();
    h.setIndex(null);
    const { replies } = await exchange(h.server.address, encodeRequest('mssante-recipient-access', 'x@gmail.com'), 1);
    assert.equal(replies[0]?.status, 'TEMP');
    assert.equal(
      await metricValue(h.metrics, 'mssante_policyd_socketmap_lookups_total', {
        map: 'mssante-recipient-access',
        result: 'temp',
      }),
      1,
    );
  });

  it('a request above the limit: answers what came before, counts a protocol error, closes', async () => {
    const h = await start({ limits: { maxRequestBytes: 100 } });
    const ok = encodeRequest('mssante-transport', 'ch-exemple.fr');
    const big = encodeRequest('mssante-domain', 'x'.repeat(100));
    const { replies, closed } = await exchange(h.server.address, Buffer.concat([ok, big]), 2);
    assert.deepEqual(
      replies.map((r) => r.status),
      ['OK'],
    );
    assert.equal(closed, true);
    assert.equal(
      await metricValue(h.metrics, 'mssante_policyd_protocol_errors_total', { frontend: 'socketmap', kind: 'request_too_large' }),
      1,
    );
  });

  it('garbage and a cut request are protocol errors by kind; the daemon goes on', async () => {
    const h = await start();
    assert.equal((await exchange(h.server.address, Buffer.from('hello\r\n'), 1)).closed, true);
    assert.equal((await exchange(h.server.address, Buffer.from('20:mssante-dom'), 1, true)).closed, true);
    assert.equal(
      await metricValue(h.metrics, 'mssante_policyd_protocol_errors_total', { frontend: 'socketmap', kind: 'bad_length' }),
      1,
    );
    assert.equal(
      await metricValue(h.metrics, 'mssante_policyd_protocol_errors_total', { frontend: 'socketmap', kind: 'truncated' }),
      1,
    );
    const { replies } = await exchange(h.server.address, encodeRequest('mssante-transport', 'ch-exemple.fr'), 1);
    assert.equal(replies[0]?.status, 'OK');
  });

  it('a request left unfinished is closed at the request timeout and counted', async () => {
    const h = await start({ requestTimeoutMs: 50 });
    const { closed } = await exchange(h.server.address, Buffer.from('20:mssante-dom'), 1);
    assert.equal(closed, true);
    assert.equal(
      await metricValue(h.metrics, 'mssante_policyd_protocol_errors_total', { frontend: 'socketmap', kind: 'request_timeout' }),
      1,
    );
  });

  it('tracks open connections and refuses those over the limit', async () => {
    const h = await start({ maxConnections: 1 });
    const [host, port] = h.server.address.split(':') as [string, string];
    const first = net.connect(Number(port), host);
    await new Promise((r) => first.once('connect', r));
    // The gauge moves when the server has accepted: wait for it, not for a delay.
    const deadline = Date.now() + WAIT_LIMIT_MS;
    while ((await metricValue(h.metrics, 'mssante_policyd_connections_active', { frontend: 'socketmap' })) !== 1) {
      assert.ok(Date.now() < deadline, 'gauge never reached 1');
      await new Promise((r) => setImmediate(r));
    }
    const second = await exchange(h.server.address, encodeRequest('mssante-transport', 'ch-exemple.fr'), 1);
    assert.equal(second.closed, true);
    assert.deepEqual(second.replies, []);
    assert.equal(await metricValue(h.metrics, 'mssante_policyd_connections_rejected_total', { frontend: 'socketmap' }), 1);
    first.destroy();
  });

  it('traces lookups at debug level only', async () => {
    const quiet = await start({}, 'info');
    await exchange(quiet.server.address, encodeRequest('mssante-transport', 'ch-exemple.fr'), 1);
    assert.equal(quiet.logs().filter((l) => l.msg === 'socketmap lookup').length, 0);
    const loud = await start({}, 'debug');
    await exchange(loud.server.address, encodeRequest('mssante-transport', 'ch-exemple.fr'), 1);
    const traces = loud.logs().filter((l) => l.msg === 'socketmap lookup');
    assert.equal(traces.length, 1);
    assert.equal(traces[0]?.map, 'mssante-transport');
    assert.equal(traces[0]?.result, 'ok');
  });

  it('refuses a per-connection byte budget that cannot hold one request', async () => {
    await assert.rejects(
      start({ limits: { maxRequestBytes: 1000 }, maxConnectionBytes: 1010 }),
      /maxConnectionBytes \(1010\) must hold one request/,
    );
    const h = await start({ limits: { maxRequestBytes: 1000 }, maxConnectionBytes: 1011 });
    const { replies } = await exchange(h.server.address, encodeRequest('mssante-domain', `${'a'.repeat(980)}.fr`), 1);
    assert.equal(replies[0]?.status, 'NOTFOUND');
  });

  it('listens on a unix socket with the mode it is given', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'socketmap-')), 'socketmap.sock');
    const h = await start({ unixSocket: { unixMode: 0o600 } }, 'info', `unix:${path}`);
    assert.equal(h.server.address, `unix:${path}`);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const socket = net.connect(path);
    const reply = await new Promise<Buffer>((resolve, reject) => {
      socket.once('data', resolve).once('error', reject);
      socket.write(encodeRequest('mssante-transport', 'ch-exemple.fr'));
    });
    socket.destroy();
    assert.equal(decodeReply(reply)?.reply.status, 'OK');
  });

  it('close() ends idle connections and stops listening', async () => {
    const h = await start();
    const [host, port] = h.server.address.split(':') as [string, string];
    const idle = net.connect(Number(port), host);
    await new Promise((r) => idle.once('connect', r));
    const ended = new Promise((r) => idle.once('end', r));
    await h.server.close(5000);
    await ended;
    idle.destroy();
    await assert.rejects(
      new Promise((resolve, reject) => {
        const s = net.connect(Number(port), host);
        s.once('connect', () => resolve(s.destroy()));
        s.once('error', reject);
      }),
    );
  });
});
