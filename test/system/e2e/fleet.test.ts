/**
 * Two daemons sharing one real redis-server (a private instance): one operator bucket between them,
 * decisions that go on when the store dies mid-flood (DUNNO or 451 4.7.1, nothing else, /readyz 200),
 * sharing that resumes when it is back, and GET /v1/fleet / fleet_instances listing both.
 *
 * Nothing depends on speed: the bound on what passes counts the refill over the time the flood really
 * took, and every wait is a generous deadline.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { POLICY_ACTIONS } from '../../../src/trust/reasons.js';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { BASE_ENTRIES, httpGet, listInForce, metricNow, OP1_CN, unsignedListFile, VALID, waitFor } from '../../support/faults.js';
import { PolicyClient, postfixRequest } from '../../support/policy-client.js';
import { startRedis } from '../../support/redis.js';

const RATE = 1;
const BURST = 30;
const THROTTLED = POLICY_ACTIONS.operator_rate_limited;
const daemons: DaemonHandle[] = [];
after(() => Promise.all(daemons.map((d) => d.stop())));

async function startPair(storeUrl: string): Promise<[DaemonHandle, DaemonHandle]> {
  const list = unsignedListFile(BASE_ENTRIES);
  const args = [
    '--store',
    storeUrl,
    '--store-timeout',
    '2000',
    '--operator-rate',
    String(RATE),
    '--operator-burst',
    String(BURST),
  ];
  const pair = await Promise.all([
    startDaemon({ whitelist: list, extraArgs: args }),
    startDaemon({ whitelist: list, extraArgs: args }),
  ]);
  daemons.push(...pair);
  return pair;
}

/** `count` messages of OP1 (no `instance`: each request is its own message), alternating between the clients. */
async function flood(
  clients: readonly PolicyClient[],
  count: number,
  midway?: () => Promise<void>,
): Promise<{ answers: string[]; seconds: number }> {
  const answers: string[] = [];
  const started = Date.now();
  for (let i = 0; i < count; i++) {
    if (i === Math.floor(count / 2) && midway !== undefined) await midway();
    answers.push(await clients[i % clients.length]!.ask(postfixRequest(OP1_CN, VALID.sender)));
  }
  return { answers, seconds: (Date.now() - started) / 1000 };
}

function tally(answers: readonly string[]): { passed: number; throttled: number; other: string[] } {
  return {
    passed: answers.filter((a) => a === 'DUNNO').length,
    throttled: answers.filter((a) => a === THROTTLED).length,
    other: answers.filter((a) => a !== 'DUNNO' && a !== THROTTLED),
  };
}

/** One bucket: at most the burst, plus the refill over the flood's real duration, plus one message per daemon in flight. */
function oneBucketBound(seconds: number): number {
  return BURST + Math.ceil(seconds * RATE) + 2;
}

test('two daemons, one store: one bucket between them; the store killed mid-flood changes no answer into an error; sharing resumes', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await startPair(redis.url);
  const clients = await Promise.all([PolicyClient.connect(a.policyAddress), PolicyClient.connect(b.policyAddress)]);
  t.after(() => clients.forEach((c) => c.close()));
  // Both have reached the store (first registrations done) before the flood.
  await waitFor('both instances in /v1/fleet', async () => {
    const fleet = JSON.parse((await httpGet(a, '/v1/fleet')).text) as { instances: unknown[] };
    return fleet.instances.length === 2;
  });

  const first = await flood(clients, 3 * BURST);
  const one = tally(first.answers);
  t.diagnostic(`shared: ${one.passed} of ${first.answers.length} passed in ${first.seconds} s (burst ${BURST}, ${RATE}/s)`);
  assert.deepEqual(one.other, []);
  assert.ok(one.passed >= BURST - 2, `the burst passes: ${one.passed}`);
  assert.ok(
    one.passed <= oneBucketBound(first.seconds),
    `${one.passed} passed in ${first.seconds} s: more than one bucket (${oneBucketBound(first.seconds)}); two buckets would pass ~${2 * BURST}`,
  );

  // The store dies in the middle of the next flood: every answer is still DUNNO or 451 4.7.1.
  const errorsBefore = await metricNow(a, 'store_errors_total', { op: 'bucket' });
  const second = await flood(clients, 2 * BURST, () => redis.kill());
  const two = tally(second.answers);
  t.diagnostic(`store killed midway: ${two.passed} passed, ${two.throttled} deferred (451 4.7.1)`);
  assert.deepEqual(two.other, [], 'no 4.3.0, no error while the store is gone');
  assert.ok(
    (await metricNow(a, 'store_errors_total', { op: 'bucket' })) > errorsBefore,
    'store_errors_total{op="bucket"} counted it',
  );
  for (const d of [a, b]) assert.equal((await httpGet(d, '/readyz')).status, 200, '/readyz stays 200 without the store');

  // Back (empty, as after a crash without persistence): sharing resumes on its own.
  await redis.start();
  const raw = redis.client();
  t.after(() => raw.disconnect());
  await waitFor(
    'a bucket written in the restarted store',
    async () => {
      await clients[0].ask(postfixRequest(OP1_CN, VALID.sender));
      await clients[1].ask(postfixRequest(OP1_CN, VALID.sender));
      return (await raw.keys('mssante-policyd:v1:bucket:*')).length > 0;
    },
    120_000,
    500,
  );
  // Logs reach this process through the daemons' stdout, maybe after the store answered.
  await waitFor('store_back logged', () => [a, b].some((d) => d.logs.some((l) => l.includes('"event":"store_back"'))));
  // The restarted bucket is full: drain it through both daemons again, one bucket it is.
  const third = await flood(clients, 3 * BURST);
  const three = tally(third.answers);
  t.diagnostic(`after the store came back: ${three.passed} of ${third.answers.length} passed in ${third.seconds} s`);
  assert.deepEqual(three.other, []);
  assert.ok(
    three.passed <= oneBucketBound(third.seconds),
    `after the store came back: ${three.passed} passed in ${third.seconds} s`,
  );
});

test('GET /v1/fleet lists both instances with the list each enforces; fleet_instances counts them per list', async (t) => {
  const redis = await startRedis(t);
  if (redis === null) return;
  const [a, b] = await startPair(redis.url);
  const sha = (await listInForce(a)).sha256;
  assert.ok(sha !== null);
  const fleet = await waitFor('both instances in /v1/fleet', async () => {
    const f = JSON.parse((await httpGet(b, '/v1/fleet')).text) as {
      store: string;
      self: string;
      stale: boolean;
      instances: Array<{ id: string; listSha256: string | null; version: string; lastListSuccessAt: string | null }>;
      lists: Record<string, number>;
    };
    return f.instances.length === 2 ? f : null;
  });
  assert.equal(fleet.store, `redis://127.0.0.1:${redis.port}/0`);
  assert.equal(fleet.stale, false);
  assert.ok(fleet.instances.some((i) => i.id === fleet.self));
  for (const i of fleet.instances) {
    assert.equal(i.listSha256, sha);
    assert.match(i.version, /^\d+\.\d+\.\d+/);
    assert.notEqual(i.lastListSuccessAt, null);
  }
  assert.deepEqual(fleet.lists, { [sha]: 2 });
  await httpGet(a, '/v1/fleet');
  assert.equal(await metricNow(a, 'fleet_instances', { list_sha256: sha }), 2);
});
