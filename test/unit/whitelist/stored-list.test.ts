import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DEMO_SIGNER, DEMO_WHITELIST } from '../../../src/config.js';
import { prepareList, type PrepareResult } from '../../../src/whitelist/prepare.js';
import { loadSignerTrust } from '../../../src/whitelist/signature.js';
import { judgeStoredList, shownStoredSource } from '../../../src/whitelist/stored-list.js';
import { buildListXml } from '../../support/xmlsec.js';

const trust = loadSignerTrust([DEMO_SIGNER]);
const demo = readFileSync(DEMO_WHITELIST);
const DN = 'CN=mx.attacker.test,O=ATTACKER,C=FR';
// The demo list is dated when it was made: judged now, as the daemon would.
const NOW = Date.now();
const DAY = 86_400_000;
const iso = (ms: number): string => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const planted = (generatedAtMs: number): Buffer =>
  Buffer.from(buildListXml([{ nom: 'victim.mssante.fr', dn: DN }], iso(generatedAtMs)));

/** What the life cycle hands judgeStoredList: prepareList's result, as the worker returns it. */
function prepared(r: PrepareResult): Parameters<typeof judgeStoredList>[0] {
  return r.ok ? { ok: true, list: r.list } : { ok: false, reason: r.reason, detail: r.detail };
}

describe('judgeStoredList: the stored copy is verified like a fresh list', () => {
  it('takes a stored copy whose signature verifies under the current trust settings', () => {
    const v = judgeStoredList(prepared(prepareList(demo, { trust, allowUnsigned: false, maxEntries: 100 })), new Set(), NOW);
    assert.ok(v.ok && v.list.signature.verified);
  });

  it('refuses a planted unsigned copy, and an edited signed one, as state_unverified with the cause', () => {
    const unsigned = judgeStoredList(
      prepared(prepareList(planted(NOW - DAY), { trust, allowUnsigned: false, maxEntries: 100 })),
      new Set(),
      NOW,
    );
    assert.ok(!unsigned.ok);
    assert.equal(unsigned.reason, 'state_unverified');
    assert.equal(unsigned.cause, 'signature_missing');
    assert.match(unsigned.detail, /^stored list: signature_missing: /);
    const edited = Buffer.from(demo.toString('utf8').replace('demo-clinique', 'demo-cliniqe'));
    const v = judgeStoredList(prepared(prepareList(edited, { trust, allowUnsigned: false, maxEntries: 100 })), new Set(), NOW);
    assert.ok(!v.ok);
    assert.equal(v.reason, 'state_unverified');
    assert.equal(v.cause, 'signature_digest_mismatch');
  });

  it('refuses a copy dated more than 24 h ahead (it would lock out every genuine list), unless that list was accepted', () => {
    const future = prepareList(planted(NOW + 30 * DAY), { trust: null, allowUnsigned: true, maxEntries: 100 });
    const v = judgeStoredList(prepared(future), new Set(), NOW);
    assert.ok(!v.ok);
    assert.equal(v.reason, 'state_unverified');
    assert.equal(v.cause, 'list_from_future');
    assert.ok(future.ok);
    assert.ok(judgeStoredList(prepared(future), new Set([future.list.sha256]), NOW).ok, 'check --accept forces it');
  });

  it('does not apply --max-list-age: the stored copy was the list in force, and a list in force that ages keeps working', () => {
    const old = prepareList(planted(NOW - 400 * DAY), { trust: null, allowUnsigned: true, maxEntries: 100 });
    assert.ok(judgeStoredList(prepared(old), new Set(), NOW).ok);
  });

  it('keeps worker_failed for a worker that crashed or timed out (nothing is known of the copy)', () => {
    const v = judgeStoredList({ ok: false, reason: 'worker_failed', detail: 'timed out' }, new Set(), NOW);
    assert.ok(!v.ok);
    assert.equal(v.reason, 'worker_failed');
  });
});

describe('shownStoredSource', () => {
  it('redacts the URL read from whitelist.json, bounds its length, and falls back to "state"', () => {
    assert.equal(shownStoredSource('https://u:p@h.example/l.xml?token=s3cret#f'), 'https://***@h.example/l.xml?***#***');
    assert.equal(shownStoredSource('/var/lib/x/list.xml'), '/var/lib/x/list.xml');
    assert.equal(shownStoredSource(42), 'state');
    assert.equal(shownStoredSource(''), 'state');
    assert.ok(shownStoredSource(`/${'a'.repeat(10_000)}`).length <= 303);
  });
});
