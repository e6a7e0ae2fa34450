/**
 * The https source through HTTPS_PROXY: a local CONNECT proxy written here (node:http 'connect'
 * event + a TCP pipe) sees the tunnel requests; TLS is verified end to end inside the tunnel.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { bypassesProxy, parseProxyUrl, proxyFromEnv } from '../../../src/whitelist/proxy.js';
import { createSource, DEFAULT_SOURCE_OPTIONS, type FetchOutcome, type SourceOptions } from '../../../src/whitelist/source.js';
import { startHttpsListServer, type HttpsListServer } from '../../support/https-server.js';
import { TestPki } from '../../support/pki.js';

interface ConnectProxy {
  readonly url: string;
  readonly seen: Array<{ target: string; authorization: string | null }>;
  /** null: tunnel; a number: answer that status instead. */
  refuseWith: number | null;
  close(): Promise<void>;
}

async function startConnectProxy(): Promise<ConnectProxy> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((_req, res) => {
    res.writeHead(405).end('CONNECT only');
  });
  const proxy: ConnectProxy = {
    url: '',
    seen: [],
    refuseWith: null,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((ok) => server.close(() => ok()));
    },
  };
  server.on('connect', (req: IncomingMessage, client: Socket, head: Buffer) => {
    sockets.add(client);
    proxy.seen.push({ target: req.url ?? '', authorization: req.headers['proxy-authorization'] ?? null });
    if (proxy.refuseWith !== null) {
      client.end(`HTTP/1.1 ${proxy.refuseWith} Refused\r\nContent-Length: 0\r\n\r\n`);
      return;
    }
    const m = /^(.+):(\d+)$/.exec(req.url ?? '');
    const upstream = netConnect(Number(m?.[2]), m?.[1] === 'localhost' ? '127.0.0.1' : (m?.[1] ?? ''), () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', () => ok()));
  (proxy as { url: string }).url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

function fetched(r: FetchOutcome): Extract<FetchOutcome, { kind: 'fetched' }> {
  assert.equal(r.kind, 'fetched', r.kind === 'failed' ? `${r.reason}: ${r.detail}` : r.kind);
  return r;
}

describe('https source through HTTPS_PROXY (CONNECT)', () => {
  let pki: TestPki;
  let server: HttpsListServer;
  let proxy: ConnectProxy;
  let options: SourceOptions;
  const body = '<ListeBlancheMSSante/>';

  before(async () => {
    pki = new TestPki();
    server = await startHttpsListServer(pki);
    server.setBehaviour({ kind: 'serve', body, etag: null });
    proxy = await startConnectProxy();
    options = { ...DEFAULT_SOURCE_OPTIONS, connectTimeoutMs: 10_000, totalTimeoutMs: 30_000, retries: 0, caFile: server.caFile };
  });
  after(async () => {
    await proxy.close();
    await server.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  it('tunnels the download through the proxy, which sees only host:port', async () => {
    const before = proxy.seen.length;
    const r = fetched(await createSource(server.url, { ...options, proxy: { url: proxy.url, noProxy: null } }).fetch(null));
    assert.equal(r.body.toString(), body);
    assert.deepEqual(proxy.seen.slice(before), [{ target: `localhost:${server.port}`, authorization: null }]);
  });

  it('sends Basic proxy credentials from the URL', async () => {
    const before = proxy.seen.length;
    const withAuth = proxy.url.replace('http://', 'http://ops%40site:s3cr%3At@');
    fetched(await createSource(server.url, { ...options, proxy: { url: withAuth, noProxy: null } }).fetch(null));
    assert.equal(proxy.seen[before]?.authorization, `Basic ${Buffer.from('ops@site:s3cr:t').toString('base64')}`);
  });

  it('NO_PROXY naming the host (or *, or a parent domain) goes direct', async () => {
    for (const noProxy of ['localhost', 'example.fr, localhost', '*', `localhost:${server.port}`]) {
      const before = proxy.seen.length;
      fetched(await createSource(server.url, { ...options, proxy: { url: proxy.url, noProxy } }).fetch(null));
      assert.equal(proxy.seen.length, before, `NO_PROXY=${noProxy}: the proxy was not used`);
    }
  });

  it('a proxy refusal is a failed load naming the status; TLS is still checked inside the tunnel', async () => {
    proxy.refuseWith = 407;
    try {
      const r = await createSource(server.url, { ...options, proxy: { url: proxy.url, noProxy: null } }).fetch(null);
      assert.equal(r.kind, 'failed');
      assert.equal(r.kind === 'failed' && r.reason, 'source_unreachable');
      assert.match(r.kind === 'failed' ? r.detail : '', /answered 407 .*CONNECT localhost:\d+/);
    } finally {
      proxy.refuseWith = null;
    }
    const otherCa = new TestPki().createCa(
      'not-the-list-ca',
      [
        ['C', 'FR'],
        ['CN', 'Other CA'],
      ],
      { keyType: 'ec' },
    );
    const r = await createSource(server.url, {
      ...options,
      caFile: otherCa.certPath,
      proxy: { url: proxy.url, noProxy: null },
    }).fetch(null);
    assert.equal(r.kind === 'failed' && r.reason, 'source_tls', JSON.stringify(r.kind === 'failed' ? r.detail : r.kind));
  });

  it('a proxy that accepts and never answers is bounded by the connect timeout', async () => {
    const { createServer: createNet } = await import('node:net');
    const held: Socket[] = [];
    const silent = createNet((s) => held.push(s));
    await new Promise<void>((ok) => silent.listen(0, '127.0.0.1', () => ok()));
    const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const r = await createSource(server.url, { ...options, connectTimeoutMs: 300, proxy: { url, noProxy: null } }).fetch(null);
      assert.equal(r.kind === 'failed' && r.reason, 'source_timeout', JSON.stringify(r));
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((ok) => silent.close(() => ok()));
    }
  });
});

describe('proxy settings', () => {
  it('reads HTTPS_PROXY/NO_PROXY, upper or lower case; empty means unset', () => {
    assert.deepEqual(proxyFromEnv({ HTTPS_PROXY: 'http://p:3128', NO_PROXY: 'localhost' }), {
      url: 'http://p:3128',
      noProxy: 'localhost',
    });
    assert.deepEqual(proxyFromEnv({ https_proxy: 'p:3128', no_proxy: '.lan' }), { url: 'p:3128', noProxy: '.lan' });
    assert.deepEqual(proxyFromEnv({ HTTPS_PROXY: ' ' }), { url: null, noProxy: null });
  });

  it('accepts http:// proxies (scheme optional), refuses others with the fix', () => {
    assert.equal(parseProxyUrl('proxy.lan:3128').host, 'proxy.lan:3128');
    assert.throws(() => parseProxyUrl('https://proxy.lan:3128'), /only an http:\/\/ proxy \(CONNECT\)/);
    assert.throws(() => parseProxyUrl('http://user:pw@'), /HTTPS_PROXY .*\*\*\*@.* is not a URL|no host/);
    assert.throws(
      () =>
        createSource('https://espacedeconfiance.mssante.fr/listeblanchemssante.xml', {
          ...DEFAULT_SOURCE_OPTIONS,
          proxy: { url: 'socks5://p:1080', noProxy: null },
        }),
      /only an http:\/\/ proxy/,
    );
  });

  it('NO_PROXY matching: exact host, domain suffix (with or without a dot), port, *', () => {
    const host = 'espacedeconfiance.mssante.fr';
    assert.equal(bypassesProxy(host, 443, null), false);
    assert.equal(bypassesProxy(host, 443, 'mssante.fr'), true);
    assert.equal(bypassesProxy(host, 443, '.mssante.fr'), true);
    assert.equal(bypassesProxy(host, 443, '*.mssante.fr'), true);
    assert.equal(bypassesProxy(host, 443, 'ESPACEDECONFIANCE.mssante.fr'), true);
    assert.equal(bypassesProxy(host, 443, 'santé.fr,sante.fr'), false);
    assert.equal(bypassesProxy(host, 443, 'confiance.mssante.fr'), false, 'a suffix only at a label boundary');
    assert.equal(bypassesProxy(host, 443, 'mssante.fr:8443'), false);
    assert.equal(bypassesProxy(host, 443, 'mssante.fr:443'), true);
    assert.equal(bypassesProxy(host, 443, '*'), true);
    assert.equal(bypassesProxy('10.1.2.3', 443, '10.1.2.3'), true);
  });
});
