/**
 * The Redis store against a real, private redis-server: the bucket script (atomic, the server's
 * clock, garbled values), the fleet registry (records read back are input), the deadline, AUTH
 * (requirepass, ACL user) and TLS.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KEY_PREFIX, keyPart, RedisStore } from '../../../src/store/redis-store.js';
import { StoreError, type InstanceRecord } from '../../../src/store/store.js';
import { redisTestCa, startRedis, type RedisInstance } from '../../support/redis.js';

const SHA = 'a'.repeat(64);

function record(id: string, listSha256: string | null = SHA): Omit<InstanceRecord, 'seenAt'> {
  return {
    id,
    host: 'mx1',
    version: '0.1.0',
    listSha256,
    listGeneratedAt: '2026-12-01T00:00:00Z',
    lastListSuccessAt: '2026-12-06T10:00:00Z',
    startedAt: '2026-12-06T09:00:00Z',
  };
}

function storeFor(redis: RedisInstance, extra: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}): RedisStore {
  return new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 10_000, ...extra });
}

/** The first call may come before the connection is up (calls fail fast then): retry until it answers. */
async function untilConnected<T>(call: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(100);
    }
  }
}

test('the bucket: burst then empty, a look takes nothing, two clients drain one bucket', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const a = storeFor(redis);
  const b = storeFor(redis);
  t.after(() => Promise.all([a.close(), b.close()]));
  // 0.001 token/s: no refill worth a token during the test, however slow the machine.
  const first = await untilConnected(() => a.takeToken('op', 0.001, 4, 1));
  assert.deepEqual({ allowed: first.allowed, tokens: Math.floor(first.tokens) }, { allowed: true, tokens: 3 });
  await untilConnected(() => b.takeToken('op', 0.001, 4, 0));
  const looked = await b.takeToken('op', 0.001, 4, 0);
  assert.equal(looked.allowed, false);
  assert.equal(Math.floor(looked.tokens), 3, 'a look (cost 0) takes nothing');
  const verdicts = [];
  for (let i = 0; i < 6; i++) verdicts.push((await (i % 2 === 0 ? a : b).takeToken('op', 0.001, 4, 1)).allowed);
  assert.deepEqual(verdicts, [true, true, true, false, false, false], 'one bucket of 4 for both clients');
  const other = await a.takeToken('another operator', 0.001, 4, 1);
  assert.equal(other.allowed, true, 'each operator has its own bucket');
});

test('a garbled bucket value grants nothing; a value of the wrong type is a StoreError, never a crash', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const store = storeFor(redis);
  const raw = redis.client();
  t.after(async () => {
    await store.close();
    raw.disconnect();
  });
  const key = `${KEY_PREFIX}bucket:${keyPart('op')}`;
  for (const garbage of ['garbage', '99999999:1', '-5:1', '1e308:1', '3:notanumber', '']) {
    await raw.set(key, garbage);
    const step = await untilConnected(() => store.takeToken('op', 0.001, 10, 1));
    assert.equal(step.allowed, false, `value ${JSON.stringify(garbage)} must not grant a token`);
    assert.ok(step.tokens >= 0 && step.tokens < 1, `value ${JSON.stringify(garbage)}: ${step.tokens}`);
  }
  await raw.del(key);
  await raw.hset(key, 'x', '1');
  await assert.rejects(store.takeToken('op', 0.001, 10, 1), (e: unknown) => e instanceof StoreError && e.op === 'bucket');
  await raw.del(key);
  assert.equal((await store.takeToken('op', 0.001, 10, 1)).allowed, true, 'a fresh bucket is full');
});

test('the fleet registry: records with a TTL, hostile records skipped, expired ones leave the index', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const store = storeFor(redis);
  const raw = redis.client();
  t.after(async () => {
    await store.close();
    raw.disconnect();
  });
  await untilConnected(() => store.registerInstance(record('mx1-1'), 60_000));
  await store.registerInstance(record('mx2-1', null), 300);
  const both = await store.listInstances();
  assert.deepEqual(
    both.map((i) => [i.id, i.listSha256]),
    [
      ['mx1-1', SHA],
      ['mx2-1', null],
    ],
  );
  // Hostile entries: not JSON, a sha256 that is not one, an id that does not match its key, a huge value.
  const hostile: Array<[string, string]> = [
    ['x1', 'not json'],
    ['x2', JSON.stringify({ ...record('x2', '<script>'), seenAt: '2026-12-06T10:00:00Z' })],
    ['x3', JSON.stringify({ ...record('someone-else'), seenAt: '2026-12-06T10:00:00Z' })],
    ['x4', JSON.stringify({ ...record('x4'), host: 'h'.repeat(100_000), seenAt: '2026-12-06T10:00:00Z' })],
  ];
  for (const [id, value] of hostile) {
    await raw.set(`${KEY_PREFIX}instance:${keyPart(id)}`, value);
    await raw.sadd(`${KEY_PREFIX}instances`, keyPart(id));
  }
  await raw.sadd(`${KEY_PREFIX}instances`, 'not-a-key-part');
  await sleep(600);
  const listed = await store.listInstances();
  assert.deepEqual(
    listed.map((i) => i.id),
    ['mx1-1'],
    'the expired record and every hostile one are left out',
  );
  assert.equal(await raw.sismember(`${KEY_PREFIX}instances`, keyPart('mx2-1')), 0, 'the expired id left the index');
});

test('a store that is gone fails at once (no queueing), and answers again when it is back', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const store = storeFor(redis, { timeoutMs: 200 });
  t.after(() => store.close());
  await untilConnected(() => store.takeToken('op', 1, 5, 1));
  await redis.kill();
  const started = Date.now();
  await assert.rejects(store.takeToken('op', 1, 5, 1), (e: unknown) => e instanceof StoreError && e.op === 'bucket');
  // Liveness, not speed: well under the daemon's patience, whatever the machine.
  assert.ok(Date.now() - started < 10_000);
  await redis.start();
  const back = await untilConnected(() => store.takeToken('op', 1, 5, 1));
  assert.equal(back.allowed, true, 'the restarted (empty) server gives a full bucket again');
});

test('AUTH: requirepass, an ACL user; a wrong password is a StoreError', async (t) => {
  const withPassword = await startRedis(t, { password: 'pw-requirepass-1' });
  if (withPassword === null) return;
  const good = storeFor(withPassword, { password: 'pw-requirepass-1' });
  const bad = storeFor(withPassword, { password: 'wrong', timeoutMs: 200 });
  t.after(() => Promise.all([good.close(), bad.close()]));
  assert.equal((await untilConnected(() => good.takeToken('op', 1, 5, 1))).allowed, true);
  await assert.rejects(bad.takeToken('op', 1, 5, 1), StoreError);

  const acl = await startRedis(t, { aclUser: { name: 'policyd', password: 'pw-acl-2' } });
  assert.ok(acl !== null);
  const user = new RedisStore({
    url: acl.url.replace('redis://', 'redis://policyd@'),
    password: 'pw-acl-2',
    ca: null,
    timeoutMs: 10_000,
  });
  const anonymous = storeFor(acl, { timeoutMs: 200 });
  t.after(() => Promise.all([user.close(), anonymous.close()]));
  assert.equal((await untilConnected(() => user.takeToken('op', 1, 5, 1))).allowed, true);
  await untilConnected(() => user.registerInstance(record('acl-1'), 60_000));
  assert.deepEqual(
    (await user.listInstances()).map((i) => i.id),
    ['acl-1'],
  );
  await assert.rejects(anonymous.takeToken('op', 1, 5, 1), StoreError);
});

test('TLS: rediss:// verified against the test CA; without that CA the store is refused', async (t) => {
  const tls = redisTestCa();
  const redis = await startRedis(t, { tls });
  if (redis === null) return;
  const trusted = storeFor(redis, { ca: tls.ca.certPem });
  const untrusted = storeFor(redis, { timeoutMs: 200 });
  t.after(() => Promise.all([trusted.close(), untrusted.close()]));
  assert.equal((await untilConnected(() => trusted.takeToken('op', 1, 5, 1))).allowed, true);
  await sleep(500);
  await assert.rejects(untrusted.takeToken('op', 1, 5, 1), StoreError);
});
