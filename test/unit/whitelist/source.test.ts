import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import {
  createSource,
  DEFAULT_SOURCE_OPTIONS,
  MAX_REDIRECTS,
  type FetchOutcome,
  type SourceFailure,
  type SourceOptions,
} from '../../../src/whitelist/source.js';
import { gzipBomb, startHttpsListServer, type HttpsListServer } from '../../support/https-server.js';
import { TestPki } from '../../support/pki.js';

const MiB = 1024 * 1024;
const LIST = Buffer.from(
  '<?xml version="1.0" encoding="UTF-8"?>\n<ListeBlanche>' +
    Array.from({ length: 200 }, (_, i) => `<Entree><Domaine>d${i}.mssante.fr</Domaine></Entree>`).join('') +
    '</ListeBlanche>\n',
);
const ETAG = '"list-v1"';
const LAST_MODIFIED = 'Fri, 28 Feb 2025 10:00:00 GMT';

function assertFailed(r: FetchOutcome, reason: SourceFailure, attempts?: number): Extract<FetchOutcome, { kind: 'failed' }> {
  assert.equal(r.kind, 'failed', `expected failed/${reason}, got ${JSON.stringify({ ...r, body: undefined })}`);
  assert.equal(r.reason, reason, r.detail);
  if (attempts !== undefined) assert.equal(r.attempts, attempts, r.detail);
  return r;
}

function assertFetched(r: FetchOutcome): Extract<FetchOutcome, { kind: 'fetched' }> {
  assert.equal(r.kind, 'fetched', r.kind === 'failed' ? `${r.reason}: ${r.detail}` : r.kind);
  return r;
}

describe('https source', () => {
  let pki: TestPki;
  let server: HttpsListServer;
  let fast: SourceOptions;

  before(async () => {
    pki = new TestPki();
    server = await startHttpsListServer(pki);
    fast = {
      ...DEFAULT_SOURCE_OPTIONS,
      maxBytes: 1 * MiB,
      connectTimeoutMs: 400,
      totalTimeoutMs: 5_000,
      retries: 2,
      retryBaseDelayMs: 5,
      caFile: server.caFile,
      userAgent: 'mssante-policyd-test',
    };
  });
  after(async () => {
    await server.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  function source(overrides: Partial<SourceOptions> = {}, url = server.url) {
    return createSource(url, { ...fast, ...overrides });
  }
  function requestsDuring<T>(
    fn: () => Promise<T>,
  ): Promise<{ result: T; count: number; first: (typeof server.requests)[number] | undefined }> {
    const start = server.requests.length;
    return fn().then((result) => ({ result, count: server.requests.length - start, first: server.requests[start] }));
  }

  it('fetches the body as served, with its validators, and sends no conditional header the first time', async () => {
    server.setBehaviour({ kind: 'serve', body: LIST, etag: ETAG, lastModified: LAST_MODIFIED });
    const { result, count, first } = await requestsDuring(() => source().fetch(null));
    const r = assertFetched(result);
    assert.ok(r.body.equals(LIST));
    assert.deepEqual(r.validators, { etag: ETAG, lastModified: LAST_MODIFIED, mtimeMs: null, size: LIST.length });
    assert.equal(r.attempts, 1);
    assert.equal(count, 1);
    assert.equal(first?.headers['user-agent'], 'mssante-policyd-test');
    assert.equal(first?.headers['if-none-match'], undefined);
    assert.equal(first?.headers['if-modified-since'], undefined);
  });

  it('sends If-None-Match and If-Modified-Since from the previous validators; 304 → not_modified', async () => {
    server.setBehaviour({ kind: 'serve', body: LIST, etag: ETAG, lastModified: LAST_MODIFIED });
    const src = source();
    const first = assertFetched(await src.fetch(null));
    const { result, first: req } = await requestsDuring(() => src.fetch(first.validators));
    assert.equal(result.kind, 'not_modified');
    assert.equal(req?.headers['if-none-match'], ETAG);
    assert.equal(req?.headers['if-modified-since'], LAST_MODIFIED);
    assert.ok(result.kind === 'not_modified');
    assert.deepEqual(result.validators, first.validators);
  });

  it('uses If-Modified-Since alone when the server gives no ETag', async () => {
    server.setBehaviour({ kind: 'serve', body: LIST, etag: null, lastModified: LAST_MODIFIED });
    const src = source();
    const first = assertFetched(await src.fetch(null));
    assert.equal(first.validators.etag, null);
    assert.equal((await src.fetch(first.validators)).kind, 'not_modified');
  });

  it('fetches again when the ETag changed', async () => {
    const v2 = Buffer.concat([LIST, Buffer.from('<!-- v2 -->')]);
    server.setBehaviour({ kind: 'serve', body: v2, etag: '"list-v2"', lastModified: 'Sat, 01 Mar 2025 10:00:00 GMT' });
    const r = assertFetched(await source().fetch({ etag: ETAG, lastModified: LAST_MODIFIED, mtimeMs: null, size: LIST.length }));
    assert.ok(r.body.equals(v2));
    assert.equal(r.validators.etag, '"list-v2"');
  });

  it('a 304 to a request that was not conditional is a failure, not "unchanged"', async () => {
    server.setBehaviour({ kind: 'status', status: 304 });
    assertFailed(await source().fetch(null), 'source_http_status', 1);
  });

  it('404 → source_http_status without retry', async () => {
    server.setBehaviour({ kind: 'status', status: 404 });
    const { result, count } = await requestsDuring(() => source().fetch(null));
    assert.match(assertFailed(result, 'source_http_status', 1).detail, /404/);
    assert.equal(count, 1);
  });

  it('500 every time → source_http_status after 1 + retries attempts', async () => {
    server.setBehaviour({ kind: 'status', status: 500 });
    const { result, count } = await requestsDuring(() => source().fetch(null));
    assert.match(assertFailed(result, 'source_http_status', 3).detail, /500/);
    assert.equal(count, 3);
  });

  it('500 then 200 → fetched on a retry', async () => {
    server.setBehaviour({ kind: 'fail-then', failures: 2, then: { kind: 'serve', body: LIST, etag: ETAG } });
    const r = assertFetched(await source().fetch(null));
    assert.equal(r.attempts, 3);
    assert.ok(r.body.equals(LIST));
  });

  it('a server that never answers → source_timeout after every attempt', async () => {
    server.setBehaviour({ kind: 'hang' });
    const { result, count } = await requestsDuring(() => source({ retries: 1 }).fetch(null));
    assertFailed(result, 'source_timeout', 2);
    assert.equal(count, 2);
  });

  it('a server that drips bytes is cut by the total deadline, not let run', async () => {
    // Bytes keep coming (faster than the silence timeout), so only the total deadline can stop it.
    server.setBehaviour({ kind: 'drip', body: LIST, intervalMs: 100 });
    const r = assertFailed(await source({ connectTimeoutMs: 1_000, totalTimeoutMs: 1_200 }).fetch(null), 'source_timeout', 1);
    assert.match(r.detail, /deadline/);
  });

  it('an honest Content-Length over the limit is refused before the body is read', async () => {
    server.setBehaviour({ kind: 'oversize', bytes: 8 * MiB, declareLength: true });
    const { result, count } = await requestsDuring(() => source().fetch(null));
    assert.match(assertFailed(result, 'source_too_large', 1).detail, /Content-Length 8388608/);
    assert.equal(count, 1);
  });

  it('a chunked body over the limit is cut while streaming', async () => {
    server.setBehaviour({ kind: 'oversize', bytes: 8 * MiB, declareLength: false });
    assertFailed(await source().fetch(null), 'source_too_large', 1);
  });

  it('a Content-Length larger than what is sent → the truncated body is never used', async () => {
    server.setBehaviour({ kind: 'lying-length', declared: LIST.length + 1000, body: LIST });
    const r = assertFailed(await source().fetch(null), 'source_unreachable', 3);
    assert.match(r.detail, /before the body was complete/);
  });

  it('a Content-Length smaller than what is sent (2 MiB past a 1 MiB limit) is refused', async () => {
    server.setBehaviour({ kind: 'lying-length', declared: 100, body: Buffer.alloc(2 * MiB, 0x41) });
    assertFailed(await source({ retries: 0 }).fetch(null), 'source_http_status', 1);
  });

  it('accepts gzip and returns the decoded bytes', async () => {
    server.setBehaviour({ kind: 'serve', body: LIST, etag: ETAG, gzip: true });
    const { result, first } = await requestsDuring(() => source().fetch(null));
    const r = assertFetched(result);
    assert.match(String(first?.headers['accept-encoding']), /gzip/);
    assert.ok(r.body.equals(LIST));
    assert.equal(r.validators.size, LIST.length);
  });

  it('a gzip bomb is cut on its decoded size', async () => {
    const decompressed = 64 * MiB;
    // The point of the test: the wire bytes are far under the limit, the decoded bytes far over.
    assert.ok(gzipBomb(decompressed).length < fast.maxBytes / 4);
    server.setBehaviour({ kind: 'gzip-bomb', decompressedBytes: decompressed });
    const r = assertFailed(await source().fetch(null), 'source_too_large', 1);
    assert.match(r.detail, /decoded/);
  });

  it(`follows ${MAX_REDIRECTS} redirects`, async () => {
    server.setBehaviour({ kind: 'redirect', hops: MAX_REDIRECTS, status: 301, then: { kind: 'serve', body: LIST, etag: ETAG } });
    const { result, count } = await requestsDuring(() => source().fetch(null));
    assert.ok(assertFetched(result).body.equals(LIST));
    assert.equal(result.attempts, 1);
    assert.equal(count, MAX_REDIRECTS + 1);
  });

  it(`refuses a ${MAX_REDIRECTS + 1}th redirect`, async () => {
    server.setBehaviour({ kind: 'redirect', hops: MAX_REDIRECTS + 1, then: { kind: 'serve', body: LIST } });
    const { result, count } = await requestsDuring(() => source().fetch(null));
    assert.match(assertFailed(result, 'source_http_status', 1).detail, /redirects/);
    assert.equal(count, MAX_REDIRECTS + 1);
  });

  it('refuses a redirect to http://', async () => {
    server.setBehaviour({ kind: 'redirect-to', location: `http://localhost:${server.port}/list.xml` });
    const { result, count } = await requestsDuring(() => source().fetch(null));
    assert.match(assertFailed(result, 'source_http_status', 1).detail, /https only/);
    assert.equal(count, 1);
  });

  it('a certificate from another CA → source_tls, not retried', async () => {
    server.setBehaviour({ kind: 'serve', body: LIST });
    const other = pki.createCa(
      'other-ca',
      [
        ['C', 'FR'],
        ['CN', 'Not the list CA'],
      ],
      { keyType: 'ec' },
    );
    const { result, count } = await requestsDuring(() => source({ caFile: other.certPath }).fetch(null));
    assertFailed(result, 'source_tls', 1);
    assert.equal(count, 0);
  });

  it('the default roots do not trust the test CA → source_tls (caFile really replaces the roots)', async () => {
    server.setBehaviour({ kind: 'serve', body: LIST });
    assertFailed(await source({ caFile: null }).fetch(null), 'source_tls', 1);
  });

  it('an empty 200 → source_empty', async () => {
    server.setBehaviour({ kind: 'serve', body: '' });
    assertFailed(await source().fetch(null), 'source_empty', 1);
  });

  it('a connection refused → source_unreachable after every attempt', async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    assertFailed(await source({}, `https://localhost:${port}/list.xml`).fetch(null), 'source_unreachable', 3);
  });

  it('a TCP peer that never starts TLS → source_timeout on the connect timeout', async () => {
    const sockets = new Set<Socket>();
    const mute: NetServer = createNetServer((s) => {
      sockets.add(s);
      s.on('error', () => {});
    });
    await new Promise<void>((resolve) => mute.listen(0, '127.0.0.1', resolve));
    const port = (mute.address() as { port: number }).port;
    try {
      const r = assertFailed(await source({ retries: 0 }, `https://localhost:${port}/list.xml`).fetch(null), 'source_timeout', 1);
      assert.match(r.detail, /no TLS connection/);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => mute.close(() => resolve()));
    }
  });

  it("the caller's signal ends a fetch at once, as a value", async () => {
    server.setBehaviour({ kind: 'hang' });
    const controller = new AbortController();
    const pending = source({ connectTimeoutMs: 5_000 }).fetch(null, controller.signal);
    setTimeout(() => controller.abort(), 100);
    const r = assertFailed(await pending, 'source_timeout', 1);
    assert.match(r.detail, /caller/);
  });

  it('the description hides URL credentials', () => {
    const url = new URL(server.url);
    url.username = 'user';
    url.password = 'secret';
    const d = source({}, url.href).description;
    assert.ok(!d.includes('secret') && !d.includes('user'), d);
  });
});

describe('file source', () => {
  let dir: string;
  const options: SourceOptions = { ...DEFAULT_SOURCE_OPTIONS, maxBytes: 64 * 1024 };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mssante-source-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('fetches the bytes, then not_modified while mtime and size are unchanged, then fetches a change', async () => {
    const path = join(dir, 'list.xml');
    writeFileSync(path, LIST);
    utimesSync(path, new Date('2025-02-28T10:00:00Z'), new Date('2025-02-28T10:00:00Z'));
    const src = createSource(path, options);
    const first = assertFetched(await src.fetch(null));
    assert.ok(first.body.equals(LIST));
    assert.equal(first.validators.size, LIST.length);
    assert.equal(first.validators.mtimeMs, Date.parse('2025-02-28T10:00:00Z'));
    assert.equal(first.validators.etag, null);

    const again = await src.fetch(first.validators);
    assert.equal(again.kind, 'not_modified');

    const v2 = Buffer.concat([LIST, Buffer.from('<!-- v2 -->')]);
    writeFileSync(path, v2);
    const changed = assertFetched(await src.fetch(first.validators));
    assert.ok(changed.body.equals(v2));
  });

  it('accepts a file: URL', async () => {
    const path = join(dir, 'url.xml');
    writeFileSync(path, LIST);
    assert.ok(assertFetched(await createSource(pathToFileURL(path).href, options).fetch(null)).body.equals(LIST));
  });

  it('a missing file → source_io that says so', async () => {
    const r = assertFailed(await createSource(join(dir, 'absent.xml'), options).fetch(null), 'source_io', 1);
    assert.match(r.detail, /no such file/);
    assert.match(r.detail, /absent\.xml/);
  });

  it('a file over the limit → source_too_large', async () => {
    const path = join(dir, 'big.xml');
    writeFileSync(path, Buffer.alloc(options.maxBytes + 1, 0x41));
    assertFailed(await createSource(path, options).fetch(null), 'source_too_large', 1);
    writeFileSync(path, Buffer.alloc(options.maxBytes, 0x41));
    assert.equal(assertFetched(await createSource(path, options).fetch(null)).body.length, options.maxBytes);
  });

  it('an empty file → source_empty; a directory → source_io', async () => {
    const empty = join(dir, 'empty.xml');
    writeFileSync(empty, '');
    assertFailed(await createSource(empty, options).fetch(null), 'source_empty', 1);
    const sub = join(dir, 'sub');
    mkdirSync(sub);
    assertFailed(await createSource(sub, options).fetch(null), 'source_io', 1);
  });
});

describe('createSource', () => {
  it('refuses http:// and says why', () => {
    assert.throws(
      () => createSource('http://example.test/list.xml', DEFAULT_SOURCE_OPTIONS),
      (e: Error) => /refused/.test(e.message) && /rollback/.test(e.message) && /use the https:\/\//.test(e.message),
    );
    assert.throws(() => createSource('HTTP://example.test/list.xml', DEFAULT_SOURCE_OPTIONS), /refused/);
  });

  it('refuses an empty location and other schemes', () => {
    assert.throws(() => createSource('', DEFAULT_SOURCE_OPTIONS), /empty/);
    assert.throws(() => createSource('   ', DEFAULT_SOURCE_OPTIONS), /empty/);
    assert.throws(() => createSource('ftp://example.test/list.xml', DEFAULT_SOURCE_OPTIONS), /unsupported scheme/);
  });

  it('refuses an https source whose CA bundle cannot be read or holds no certificate', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mssante-ca-'));
    try {
      assert.throws(
        () => createSource('https://example.test/list.xml', { ...DEFAULT_SOURCE_OPTIONS, caFile: join(dir, 'absent.pem') }),
        /CA bundle .* cannot be read/,
      );
      const junk = join(dir, 'junk.pem');
      writeFileSync(junk, 'not a certificate\n');
      assert.throws(
        () => createSource('https://example.test/list.xml', { ...DEFAULT_SOURCE_OPTIONS, caFile: junk }),
        /no PEM certificate/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
