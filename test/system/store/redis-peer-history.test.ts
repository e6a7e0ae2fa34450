/**
 * The shared certificate history against a real redis-server: two MX see one history (a renewal seen
 * on one is known on the other), each identity keeps a bounded number of fingerprints, concurrent
 * sightings are atomic, and garbled entries are skipped.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PEER_HISTORY_TTL_MS, RedisPeerHistory } from '../../../src/store/peer-history.js';
import { KEY_PREFIX, keyPart, RedisStore } from '../../../src/store/redis-store.js';
import { StoreError } from '../../../src/store/store.js';
import { startRedis } from '../../support/redis.js';

const ID = 'mx.op1.test';

async function connected(store: RedisStore): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (store.redis.status !== 'ready') {
    if (Date.now() > deadline) throw new Error(`store not ready: ${store.redis.status}`);
    await sleep(50);
  }
}

test('two MX share one certificate history per identity: new, known, changed; bounded; listed', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const mx1 = new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 10_000 });
  const mx2 = new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 10_000 });
  t.after(() => Promise.all([mx1.close(), mx2.close()]));
  await Promise.all([connected(mx1), connected(mx2)]);
  const h1 = new RedisPeerHistory(mx1.redis, 3);
  const h2 = new RedisPeerHistory(mx2.redis, 3);

  assert.deepEqual(await h1.record(ID, 'AA', 'policy', 1000), { isNew: true, previous: null, firstSeen: 1000 });
  assert.deepEqual(
    await h2.record(ID, 'AA', 'milter', 2000),
    { isNew: false, previous: 'AA', firstSeen: 1000 },
    'known on the other MX',
  );
  assert.deepEqual(await h2.record(ID, 'BB', 'policy', 3000), { isNew: true, previous: 'AA', firstSeen: 3000 }, 'a renewal');
  assert.deepEqual(
    await h1.record(ID, 'BB', 'policy', 4000),
    { isNew: false, previous: 'BB', firstSeen: 3000 },
    'not news on MX 1',
  );

  for (const [i, fp] of ['CC', 'DD', 'EE'].entries()) await h1.record(ID, fp, 'policy', 5000 + i);
  const listed = await h2.list();
  assert.equal(listed.length, 1);
  assert.deepEqual(
    listed[0]!.fingerprints.map((f) => f.fingerprint),
    ['EE', 'DD', 'CC'],
    'at most 3 kept, the oldest first-seen dropped',
  );
  assert.deepEqual(listed[0]!.fingerprints[0], { fingerprint: 'EE', firstSeen: 5002, lastSeen: 5002, frontend: 'policy' });
  assert.deepEqual(
    await h2.record(ID, 'AA', 'policy', 6000),
    { isNew: true, previous: 'EE', firstSeen: 6000 },
    'a dropped one is new again',
  );
});

test('concurrent sightings of one new fingerprint: exactly one is new', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const stores = [0, 1, 2, 3].map(() => new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 5000 }));
  t.after(() => Promise.all(stores.map((s) => s.close())));
  await Promise.all(stores.map(connected));
  const results = await Promise.all(
    stores.flatMap((s, i) => [0, 1, 2].map((j) => new RedisPeerHistory(s.redis).record(ID, 'FF', 'policy', 100 + i * 3 + j))),
  );
  assert.equal(results.filter((r) => r.isNew).length, 1);
  assert.equal(new Set(results.map((r) => r.firstSeen)).size, 1, 'every sighting reports the same first-seen');
});

test('hostile store content: garbled entries are skipped; unbounded input is refused', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const store = new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 10_000 });
  const raw = redis.client();
  t.after(async () => {
    await store.close();
    raw.disconnect();
  });
  await connected(store);
  const history = new RedisPeerHistory(store.redis);
  await history.record(ID, 'AA', 'policy', 1000);
  const base = `${KEY_PREFIX}peers:${keyPart(ID)}`;
  await raw.hset(`${base}:last`, 'AA', 'not-a-time policy');
  await raw.zadd(`${base}:first`, 5, 'ZZ');
  await raw.sadd(`${KEY_PREFIX}peers`, 'garbage', keyPart('someone'));
  await raw.hset(`${KEY_PREFIX}peers:${keyPart('someone')}:meta`, 'identity', 'not-someone');
  assert.deepEqual(await history.list(), [], 'nothing readable: nothing listed');
  await raw.del(`${base}:meta`);
  await raw.set(`${base}:meta`, 'a string, not a hash');
  await assert.rejects(history.record(ID, 'BB', 'policy', 2000), (e: unknown) => e instanceof StoreError && e.op === 'peers');
  await assert.rejects(history.record('x'.repeat(5000), 'BB', 'policy', 2000), StoreError);
  await assert.rejects(history.record(ID, 'BB', 'policy\r\n', 2000), StoreError);
});

test('an identity’s keys expire 400 days after its last sighting; an expired identity leaves the index', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const store = new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 10_000 });
  t.after(() => store.close());
  await connected(store);
  const history = new RedisPeerHistory(store.redis);
  await history.record(ID, 'AA', 'policy', 1000);
  await history.record('mx.op2.test', 'BB', 'policy', 1000);
  const base = `${KEY_PREFIX}peers:${keyPart(ID)}`;
  for (const key of [`${base}:first`, `${base}:last`, `${base}:meta`]) {
    const ttl = await store.redis.pttl(key);
    assert.ok(ttl > PEER_HISTORY_TTL_MS - 600_000 && ttl <= PEER_HISTORY_TTL_MS, `${key}: ${ttl} ms to live`);
  }
  // As if 400 days had passed for this identity alone.
  await store.redis.del(`${base}:first`, `${base}:last`, `${base}:meta`);
  assert.deepEqual(
    (await history.list()).map((p) => p.identity),
    ['mx.op2.test'],
  );
  assert.deepEqual(await store.redis.smembers(`${KEY_PREFIX}peers`), [keyPart('mx.op2.test')]);
  assert.deepEqual(
    await history.record(ID, 'AA', 'policy', 9000),
    { isNew: true, previous: null, firstSeen: 9000 },
    'a first sighting again',
  );
});
