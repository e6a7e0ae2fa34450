import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { createMetrics } from '../../../src/observe/metrics.js';
import { POLICY_ACTIONS, REASONS, type ReasonId } from '../../../src/trust/reasons.js';
import {
  READY_REASON_EVENT_LOOP,
  startHttpServer,
  type DomainLookup,
  type DryRunInput,
  type DryRunResult,
  type HttpDeps,
  type WhitelistStatus,
} from '../../../src/http/server.js';

/** A small world that behaves: a list that can be (un)loaded, and a decision that reads it. */
function fakeWorld() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const metrics = createMetrics({ defaultMetrics: false });
  const domains = new Map<string, string>([
    ['hopital.mssante.fr', 'CN=mx.hopital.fr,OU=123,O=Hopital,ST=Paris (75),C=FR'],
    ['xn--hpital-gva.mssante.fr', 'CN=mx.hôpital.fr,OU=456,O=Hôpital,ST=Paris (75),C=FR'],
  ]);
  const world = {
    lines,
    logger,
    metrics,
    listLoaded: false,
    dryRunCalls: [] as DryRunInput[],
    throwInDecide: false,
  };
  const cnOf = (dn: string) => /^CN=([^,]+)/.exec(dn)?.[1] ?? '';
  function answer(id: ReasonId): DryRunResult {
    return { result: REASONS[id].result, reason: id, action: POLICY_ACTIONS[id] };
  }
  const deps: HttpDeps = {
    metrics,
    logger,
    readiness: () => (world.listLoaded ? { ready: true, reasons: [] } : { ready: false, reasons: ['whitelist_unavailable'] }),
    whitelistStatus: (): WhitelistStatus & { internal: string } => ({
      usable: world.listLoaded,
      source: world.listLoaded ? '/etc/mssante/liste.xml' : null,
      generatedAt: world.listLoaded ? '2025-02-28T15:42:07Z' : null,
      sha256: world.listLoaded ? 'ab'.repeat(32) : null,
      domains: world.listLoaded ? domains.size : 0,
      entries: world.listLoaded ? domains.size + 1 : 0,
      skipped: world.listLoaded ? [{ index: 2, domain: null, reason: 'entry_invalid', detail: 'Nom is "_"' }] : [],
      lastSuccessAt: world.listLoaded ? '2025-03-01T00:00:00Z' : null,
      lastFailureAt: null,
      lastFailureReason: null,
      lastFailureDetail: null,
      signer: world.listLoaded ? { subject: 'CN=alb.mssante.fr', validTo: '2026-08-23T00:00:00Z' } : null,
      internal: 'must not leak',
    }),
    lookupDomain: (name) => {
      const key = name.toLowerCase() === 'hôpital.mssante.fr' ? 'xn--hpital-gva.mssante.fr' : name.toLowerCase();
      const dn = world.listLoaded ? domains.get(key) : undefined;
      if (dn === undefined) return null;
      const found: DomainLookup = {
        domain: key,
        domainUnicode: key.startsWith('xn--') ? 'hôpital.mssante.fr' : key,
        entries: [{ dn, dnNormalised: dn.toLowerCase(), cn: cnOf(dn), description: 'test', updatedAt: null }],
      };
      return found;
    },
    dryRun: (input) => {
      world.dryRunCalls.push(input);
      if (world.throwInDecide) throw new Error('boom');
      if (!world.listLoaded) return answer('whitelist_unavailable');
      if (!input.encryption_protocol) return answer('tls_required');
      if (!input.ccert_subject) return answer('cert_missing');
      const domain = input.sender.slice(input.sender.lastIndexOf('@') + 1).toLowerCase();
      const dn = domains.get(domain);
      if (dn === undefined) return answer('sender_domain_not_listed');
      return cnOf(dn) === input.ccert_subject ? answer('ok') : answer('sender_cert_mismatch');
    },
  };
  return { world, deps };
}

async function get(
  address: string,
  path: string,
  method = 'GET',
  body?: string,
): Promise<{ status: number; type: string; body: string }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: host.replace(/^\[|\]$/g, ''), port, path, method, headers: body ? { 'content-type': 'application/json' } : {} },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type']),
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('http server', () => {
  const { world, deps } = fakeWorld();
  let server: Awaited<ReturnType<typeof startHttpServer>>;
  before(async () => {
    server = await startHttpServer('127.0.0.1:0', deps);
  });
  after(async () => {
    await server.close();
  });

  it('reports the real address when port 0 is asked', () => {
    assert.match(server.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(server.address, '127.0.0.1:0');
  });

  it('/healthz answers alive', async () => {
    const r = await get(server.address, '/healthz');
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body), { status: 'alive' });
  });

  it('/healthz names the running build when given one (version, Node, start time)', async () => {
    const build = { version: '9.8.7', node: '22.1.0', startedAt: '2026-12-06T10:00:00.000Z' };
    const s2 = await startHttpServer('127.0.0.1:0', { ...deps, build });
    try {
      const r = await get(s2.address, '/healthz');
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), { status: 'alive', ...build });
    } finally {
      await s2.close();
    }
  });

  it('/readyz follows the list: 503 with the reason, then 200 once loaded', async () => {
    world.listLoaded = false;
    const down = await get(server.address, '/readyz');
    assert.equal(down.status, 503);
    const downBody = JSON.parse(down.body) as { status: string; reasons: string[] };
    assert.equal(downBody.status, 'not_ready');
    assert.deepEqual(downBody.reasons, ['whitelist_unavailable']);
    world.listLoaded = true;
    const up = await get(server.address, '/readyz');
    assert.equal(up.status, 200);
    assert.deepEqual((JSON.parse(up.body) as { reasons: string[] }).reasons, []);
  });

  it('/metrics serves the registry in the Prometheus text format', async () => {
    deps.metrics.countDecision('policy', 'reject', 'cert_not_listed', 0.0003);
    deps.metrics.countDecision('policy', 'reject', 'cert_not_listed', 0.0002);
    deps.metrics.whitelistDomains.set(2);
    const r = await get(server.address, '/metrics');
    assert.equal(r.status, 200);
    assert.equal(r.type, deps.metrics.registry.contentType);
    assert.match(r.body, /^mssante_policyd_decisions_total\{frontend="policy",result="reject",reason="cert_not_listed"\} 2$/m);
    assert.match(r.body, /^mssante_policyd_decision_duration_seconds_count\{frontend="policy"\} \d+$/m);
    assert.match(r.body, /^mssante_policyd_whitelist_domains 2$/m);
  });

  it('/v1/whitelist shows the list in force, through the documented schema only', async () => {
    world.listLoaded = true;
    const r = await get(server.address, '/v1/whitelist');
    assert.equal(r.status, 200);
    const body = JSON.parse(r.body) as Record<string, unknown>;
    assert.equal(body.usable, true);
    assert.equal(body.domains, 2);
    assert.equal(body.lastFailureAt, null);
    assert.deepEqual(body.signer, { subject: 'CN=alb.mssante.fr', validTo: '2026-08-23T00:00:00Z' });
    assert.deepEqual(body.skipped, [{ index: 2, domain: null, reason: 'entry_invalid', detail: 'Nom is "_"' }]);
    assert.equal('internal' in body, false, 'fields outside the schema are not serialised');

    world.listLoaded = false;
    const none = JSON.parse((await get(server.address, '/v1/whitelist')).body) as Record<string, unknown>;
    assert.equal(none.usable, false);
    assert.equal(none.signer, null);
    assert.equal(none.generatedAt, null);
    world.listLoaded = true;
  });

  it('/v1/whitelist/domains/:name finds a listed domain, by A-label or U-label, and 404s the others', async () => {
    world.listLoaded = true;
    const r = await get(server.address, '/v1/whitelist/domains/HOPITAL.mssante.fr');
    assert.equal(r.status, 200);
    const body = JSON.parse(r.body) as DomainLookup;
    assert.equal(body.domain, 'hopital.mssante.fr');
    assert.equal(body.entries[0]?.cn, 'mx.hopital.fr');
    assert.equal(body.entries[0]?.updatedAt, null);

    const idn = await get(server.address, `/v1/whitelist/domains/${encodeURIComponent('hôpital.mssante.fr')}`);
    assert.equal(idn.status, 200);
    assert.equal((JSON.parse(idn.body) as DomainLookup).domainUnicode, 'hôpital.mssante.fr');

    const missing = await get(server.address, '/v1/whitelist/domains/sub.hopital.mssante.fr');
    assert.equal(missing.status, 404);
    assert.match(missing.type, /application\/json/);
    assert.equal((JSON.parse(missing.body) as { code: string }).code, 'domain_not_listed');
  });

  it('POST /v1/decide runs the decision on the body; GET with a query string gives the same answer', async () => {
    world.listLoaded = true;
    const input = { sender: 'dr.x@hopital.mssante.fr', ccert_subject: 'mx.hopital.fr', encryption_protocol: 'TLSv1.3' };
    const post = await get(server.address, '/v1/decide', 'POST', JSON.stringify(input));
    assert.equal(post.status, 200);
    assert.deepEqual(JSON.parse(post.body), { result: 'pass', reason: 'ok', action: 'DUNNO' });

    const qs = new URLSearchParams({ ...input, ccert_subject: 'mx.other.fr' }).toString();
    const viaGet = await get(server.address, `/v1/decide?${qs}`);
    assert.equal(viaGet.status, 200);
    assert.deepEqual(JSON.parse(viaGet.body), {
      result: 'reject',
      reason: 'sender_cert_mismatch',
      action: POLICY_ACTIONS.sender_cert_mismatch,
    });
    const postMismatch = await get(
      server.address,
      '/v1/decide',
      'POST',
      JSON.stringify({ ...input, ccert_subject: 'mx.other.fr' }),
    );
    assert.equal(postMismatch.body, viaGet.body);

    world.listLoaded = false;
    const deferred = JSON.parse((await get(server.address, '/v1/decide', 'POST', JSON.stringify(input))).body) as DryRunResult;
    assert.equal(deferred.result, 'tempfail');
    assert.match(deferred.action, /^451 4\.3\.0 /);
    world.listLoaded = true;
  });

  it('/v1/decide validates its input: sender required, x_ccert_verified is 0 or 1, unknown names dropped', async () => {
    const calls = world.dryRunCalls.length;
    const noSender = await get(server.address, '/v1/decide', 'POST', JSON.stringify({ ccert_subject: 'mx.hopital.fr' }));
    assert.equal(noSender.status, 400);
    assert.match((JSON.parse(noSender.body) as { message: string }).message, /sender/);
    const badFlag = await get(server.address, '/v1/decide?sender=a@hopital.mssante.fr&x_ccert_verified=yes');
    assert.equal(badFlag.status, 400);
    const tooLong = await get(server.address, '/v1/decide', 'POST', JSON.stringify({ sender: 'a'.repeat(9000) }));
    assert.equal(tooLong.status, 400);
    assert.equal(world.dryRunCalls.length, calls, 'invalid input never reaches the decision');

    const extra = await get(server.address, '/v1/decide', 'POST', JSON.stringify({ sender: '', client_address: '192.0.2.1' }));
    assert.equal(extra.status, 200);
    assert.deepEqual(world.dryRunCalls.at(-1), { sender: '' });
  });

  it('a fault in the decision is a 500 logged at error, and the server goes on', async () => {
    world.throwInDecide = true;
    const r = await get(server.address, '/v1/decide?sender=a@hopital.mssante.fr');
    world.throwInDecide = false;
    assert.equal(r.status, 500);
    assert.ok(world.lines.some((l) => l.level === 50 && (l.err as { message?: string } | undefined)?.message === 'boom'));
    assert.equal((await get(server.address, '/healthz')).status, 200);
  });

  it('is read-only: other methods and unknown paths are 404', async () => {
    for (const [method, path] of [
      ['PUT', '/v1/whitelist'],
      ['DELETE', '/v1/whitelist'],
      ['POST', '/metrics'],
      ['GET', '/v1/reload'],
    ] as const) {
      assert.equal((await get(server.address, path, method)).status, 404, `${method} ${path}`);
    }
  });

  it('logs requests at debug only, with method, url and status', async () => {
    const before = world.lines.length;
    await get(server.address, '/healthz');
    await sleep(10);
    const mine = world.lines.slice(before);
    const line = mine.find((l) => l.url === '/healthz');
    assert.ok(line, 'a request line is logged');
    assert.equal(line.level, 20);
    assert.equal(line.statusCode, 200);
    assert.equal(line.method, 'GET');
    assert.deepEqual(
      mine.filter((l) => (l.level as number) >= 30),
      [],
      'nothing above debug for a normal request',
    );
  });
});

/** One request with the given Host header (undefined: no Host header at all, as HTTP/1.0 allows). */
function withHost(address: string, path: string, host: string | undefined): Promise<{ status: number; body: string }> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: address.slice(0, i),
        port: Number(address.slice(i + 1)),
        path,
        setHost: false,
        headers: host === undefined ? {} : { host },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('Host allow-list (DNS rebinding)', () => {
  const { deps } = fakeWorld();
  let server: Awaited<ReturnType<typeof startHttpServer>>;
  before(async () => {
    server = await startHttpServer('127.0.0.1:0', { ...deps, allowedHosts: ['metrics.internal.example', 'proxy.example:8443'] });
  });
  after(async () => {
    await server.close();
  });

  it('answers loopback names, the listen address and --http-allowed-host, with or without a port', async () => {
    const port = server.address.slice(server.address.lastIndexOf(':') + 1);
    for (const host of [
      'localhost',
      `localhost:${port}`,
      'LOCALHOST',
      '127.0.0.1',
      `127.0.0.1:${port}`,
      '[::1]',
      `[::1]:${port}`,
      'metrics.internal.example',
      'metrics.internal.example:9464',
      'proxy.example:8443',
    ]) {
      const r = await withHost(server.address, '/metrics', host);
      assert.equal(r.status, 200, host);
    }
  });

  it('refuses any other Host with 421 and a body that tells nothing of the daemon', async () => {
    for (const host of [
      'evil.example',
      'evil.example:9464',
      'localhost.evil.example',
      '127.0.0.1.nip.io',
      'proxy.example',
      'proxy.example:80',
      '[::2]',
      'localhost:abc',
      'local host',
      '',
      'x'.repeat(400),
    ]) {
      for (const path of [
        '/metrics',
        '/v1/whitelist',
        '/v1/whitelist/domains/hopital.mssante.fr',
        '/v1/decide?sender=a@hopital.mssante.fr',
        '/healthz',
      ]) {
        const r = await withHost(server.address, path, host);
        assert.equal(r.status, 421, `${host} ${path}`);
        assert.deepEqual(JSON.parse(r.body), {
          statusCode: 421,
          code: 'host_not_allowed',
          error: 'Misdirected Request',
          message: 'Host not allowed',
        });
        assert.doesNotMatch(r.body, /mssante_policyd|hopital|usable/);
      }
    }
  });

  it('the listen address itself is allowed when it is not loopback-named', async () => {
    const { deps: d } = fakeWorld();
    const s = await startHttpServer('0.0.0.0:0', d);
    try {
      const port = s.address.slice(s.address.lastIndexOf(':') + 1);
      assert.equal((await withHost(`127.0.0.1:${port}`, '/healthz', `0.0.0.0:${port}`)).status, 200);
      assert.equal((await withHost(`127.0.0.1:${port}`, '/healthz', 'mx.example')).status, 421);
    } finally {
      await s.close();
    }
  });
});

describe('readiness from the event loop', () => {
  it('turns not ready while the loop is saturated, and ready again once it recovers', async () => {
    const { world, deps } = fakeWorld();
    world.listLoaded = true;
    const server = await startHttpServer('127.0.0.1:0', {
      ...deps,
      // Windows of 2 s: the saturation is still in view when /readyz is asked, even if this process
      // waits a second for a CPU first (unit files run two at a time; CI may share the machine).
      eventLoop: { maxDelayMs: 50, windowMs: 2000, resolutionMs: 10 },
    });
    try {
      assert.equal((await get(server.address, '/readyz')).status, 200);
      // Long synchronous chunks with brief yields: every delay sample is ~150 ms.
      const until = Date.now() + 1200;
      while (Date.now() < until) {
        const chunkEnd = Date.now() + 150;
        while (Date.now() < chunkEnd) {
          /* busy */
        }
        await new Promise((r) => setImmediate(r));
      }
      const busy = await get(server.address, '/readyz');
      assert.equal(busy.status, 503);
      const body = JSON.parse(busy.body) as { reasons: string[]; eventLoopDelayP99Seconds: number };
      assert.deepEqual(body.reasons, [READY_REASON_EVENT_LOOP]);
      assert.ok(body.eventLoopDelayP99Seconds > 0.05);

      // Two full windows of an idle loop clear both the current and the previous window (a deadline
      // of 60 s, not a speed: on a busy host the loop is not idle at once).
      let status = 0;
      for (let i = 0; i < 200 && status !== 200; i++) {
        await sleep(300);
        status = (await get(server.address, '/readyz')).status;
      }
      assert.equal(status, 200);
    } finally {
      await server.close();
    }
  });
});

describe('listen addresses', () => {
  it('refuses a malformed address before binding anything', async () => {
    const { deps } = fakeWorld();
    for (const bad of ['9464', '127.0.0.1', '127.0.0.1:99999', 'unix:', '::1:9464']) {
      await assert.rejects(startHttpServer(bad, deps), /invalid listen address/, bad);
    }
  });

  it('serves on a unix socket and reports it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'policyd-http-'));
    const { deps } = fakeWorld();
    const server = await startHttpServer(`unix:${join(dir, 'http.sock')}`, deps);
    try {
      assert.equal(server.address, `unix:${join(dir, 'http.sock')}`);
      const body = await new Promise<string>((resolve, reject) => {
        const req = httpRequest({ socketPath: join(dir, 'http.sock'), path: '/healthz' }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(text));
        });
        req.on('error', reject);
        req.end();
      });
      assert.deepEqual(JSON.parse(body), { status: 'alive' });
      await server.close();
      assert.equal(existsSync(join(dir, 'http.sock')), false, 'the socket file is removed on close');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('close() completes even with a client stuck in the middle of a request', async () => {
    const { deps } = fakeWorld();
    const server = await startHttpServer('127.0.0.1:0', deps);
    const [host, port] = server.address.split(':') as [string, string];
    const stuck = net.connect({ host, port: Number(port) });
    await new Promise((r) => stuck.once('connect', r));
    stuck.write('GET /metrics HTTP/1.1\r\nHost: x\r\n'); // headers never finished
    const closedByServer = new Promise((r) => stuck.once('close', r));
    await server.close();
    await closedByServer;
    await assert.rejects(get(server.address, '/healthz'), /ECONNREFUSED/);
  });

  it('rejects a port already in use with the listen error', async () => {
    const { deps } = fakeWorld();
    const first = await startHttpServer('127.0.0.1:0', deps);
    try {
      await assert.rejects(startHttpServer(first.address, deps), /EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});

describe('http server: the change journal', () => {
  const change = {
    from: { sha256: 'a'.repeat(64), generatedAt: '2026-04-19T00:00:00Z' },
    to: { sha256: 'b'.repeat(64), generatedAt: '2026-04-20T00:00:00Z' },
    appliedAt: '2026-04-20T03:00:00.000Z',
    added: ['new.mssante.fr'],
    removed: ['gone.mssante.fr'],
    rebound: [{ domain: 'moved.mssante.fr', from: ['CN=mx.a.fr,C=fr'], to: ['CN=mx.b.fr,C=fr'] }],
    operatorsAdded: ['CN=mx.b.fr,C=fr'],
    operatorsRemoved: [],
  };
  const removal = { kind: 'removed' as const, appliedAt: change.appliedAt, from: change.from, to: change.to };

  it('GET /v1/whitelist/changes serves the journal as given, newest first; a 404 lookup carries the domain’s changes', async () => {
    const { deps } = fakeWorld();
    const server = await startHttpServer('127.0.0.1:0', {
      ...deps,
      listChanges: () => [{ ...change, internal: 'must not leak' } as typeof change, { ...change, appliedAt: null }],
      unlistedDomain: (name) => (name === 'gone.mssante.fr' ? { domain: name, changes: [removal] } : null),
    });
    try {
      const r = await get(server.address, '/v1/whitelist/changes');
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body), [change, { ...change, appliedAt: null }]);
      const gone = await get(server.address, '/v1/whitelist/domains/gone.mssante.fr');
      assert.equal(gone.status, 404);
      const body = JSON.parse(gone.body) as { code: string; domain: string; changes: unknown[] };
      assert.deepEqual([body.code, body.domain, body.changes], ['domain_not_listed', 'gone.mssante.fr', [removal]]);
    } finally {
      await server.close();
    }
  });

  it('without a journal the route is absent', async () => {
    const { deps } = fakeWorld();
    const server = await startHttpServer('127.0.0.1:0', deps);
    try {
      assert.equal((await get(server.address, '/v1/whitelist/changes')).status, 404);
    } finally {
      await server.close();
    }
  });
});
