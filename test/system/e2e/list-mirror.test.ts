/**
 * A list mirror between MX: GET /v1/whitelist/signed serves the signed bytes in force (ETag = sha256,
 * 304 on If-None-Match), and a daemon fed only by a peer's mirror over plain http:// verifies them
 * itself and enforces the same sha256. With --whitelist repeated, a source that fails passes the turn
 * to the next; /v1/whitelist and whitelist_source_position say which one the list came from.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startDaemon, freePort, type DaemonHandle } from '../../support/daemon.js';
import {
  BASE_ENTRIES,
  createListSigner,
  isoDays,
  listInForce,
  logRecords,
  metricNow,
  replaceFile,
  tempDir,
  waitFor,
} from '../../support/faults.js';

const daemons: DaemonHandle[] = [];
const signer = createListSigner();
after(async () => {
  await Promise.all(daemons.map((d) => d.stop()));
  signer.cleanup();
});

async function start(whitelist: string[]): Promise<DaemonHandle> {
  const [first, ...rest] = whitelist;
  const d = await startDaemon({
    whitelist: first!,
    extraArgs: [...rest.flatMap((w) => ['--whitelist', w]), ...signer.trustArgs],
  });
  daemons.push(d);
  return d;
}

test('a peer mirror: the signed bytes with their sha256 as ETag; a daemon fed only by it verifies and enforces the same list', async () => {
  const file = join(tempDir('mirror'), 'list.xml');
  const xml = signer.sign(BASE_ENTRIES, isoDays(-1));
  writeFileSync(file, xml);
  const origin = await start([file]);
  const sha = createHash('sha256').update(xml).digest('hex');
  assert.equal((await listInForce(origin)).sha256, sha);

  const url = `http://${origin.httpAddress}/v1/whitelist/signed`;
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('etag'), `"${sha}"`);
  assert.equal(await res.text(), xml, 'byte for byte the list verified');
  const again = await fetch(url, { headers: { 'if-none-match': `"${sha}"` } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(url, { headers: { 'if-none-match': `"${'0'.repeat(64)}"` } })).status, 200);

  const fed = await start([url]);
  const status = await listInForce(fed);
  assert.equal(status.sha256, sha, 'the same list, verified by the fed daemon itself');
  assert.equal(status.source, url);
  assert.equal(status.signer?.matched !== undefined, true, 'its own signature check matched the configured CA');
  assert.equal(logRecords(fed, 'plain_http_source').length, 1, 'a start-up warning names the unauthenticated transport');
});

test('failover: a dead first source, a mirror second; the list comes from the second, and says so', async () => {
  const file = join(tempDir('mirror'), 'list.xml');
  const xml = signer.sign(BASE_ENTRIES, isoDays(-2));
  writeFileSync(file, xml);
  const origin = await start([file]);
  const dead = `http://127.0.0.1:${await freePort()}/v1/whitelist/signed`;
  const mirror = `http://${origin.httpAddress}/v1/whitelist/signed`;
  const fed = await start([dead, mirror]);
  const status = await listInForce(fed);
  assert.equal(status.sha256, createHash('sha256').update(xml).digest('hex'));
  assert.equal(status.source, mirror);
  assert.equal(await metricNow(fed, 'whitelist_source_position'), 2);
});

test('a mirror that serves a tampered list is refused like any source; nothing is put in force from it', async () => {
  const file = join(tempDir('mirror'), 'list.xml');
  const tampered = signer.sign(BASE_ENTRIES, isoDays(-1)).replace('op1.mssante.test', 'evil.mssante.test');
  writeFileSync(file, tampered);
  // The origin itself runs unsigned (it would refuse the file): a hostile mirror serving any bytes.
  const origin = await startDaemon({ whitelist: file });
  daemons.push(origin);
  const fed = startDaemon({
    whitelist: `http://${origin.httpAddress}/v1/whitelist/signed`,
    extraArgs: signer.trustArgs.slice(),
    readyTimeoutMs: 20_000,
  });
  await assert.rejects(
    fed,
    /not ready[\s\S]*"reason":"signature_digest_mismatch"/,
    'refused by the signature check: /readyz stays 503',
  );
});

test('a first source serving a stale or tampered copy passes the turn to the next within the same load', async () => {
  const dir = tempDir('failover');
  const first = join(dir, 'first.xml');
  const second = join(dir, 'second.xml');
  const sha = (xml: string): string => createHash('sha256').update(xml).digest('hex');
  writeFileSync(first, signer.sign(BASE_ENTRIES, isoDays(-3)));
  writeFileSync(second, signer.sign(BASE_ENTRIES, isoDays(-3)));
  const fed = await start([first, second]);
  assert.equal((await listInForce(fed)).source, first);

  // The first source now serves an older signed list (a stale mirror, or a replay): list_older, then the second.
  replaceFile(first, signer.sign(BASE_ENTRIES, isoDays(-10)));
  const newer = signer.sign(BASE_ENTRIES, isoDays(-2));
  replaceFile(second, newer);
  // The refusal shows on /v1/whitelist before the second source's list is in force: wait for that list.
  fed.signal('SIGHUP');
  const afterRollback = await waitFor('the second source in force', async () => {
    const status = await listInForce(fed);
    return status.sha256 === sha(newer) ? status : null;
  });
  assert.equal(afterRollback.source, second);
  assert.equal(await metricNow(fed, 'whitelist_source_position'), 2);
  assert.equal(await metricNow(fed, 'whitelist_load_failures_total', { reason: 'list_older' }), 1);
  assert.equal(logRecords(fed, 'list_source_refused').length, 1);

  // A tampered copy at the first source: the signature refuses it, the second is asked.
  replaceFile(first, signer.sign(BASE_ENTRIES, isoDays(-1)).replace('op1.mssante.test', 'evil.mssante.test'));
  const newest = signer.sign(BASE_ENTRIES, isoDays(-1));
  replaceFile(second, newest);
  fed.signal('SIGHUP');
  const afterTamper = await waitFor('the second source in force again', async () => {
    const status = await listInForce(fed);
    return status.sha256 === sha(newest) ? status : null;
  });
  assert.equal(afterTamper.source, second);
  assert.equal(await metricNow(fed, 'whitelist_load_failures_total', { reason: 'signature_digest_mismatch' }), 1);
});
