#!/usr/bin/env node
/**
 * Cost of the shared store (issue 24, goal: at most +30 % CPU per decision with the throttle on),
 * in one process, same run: the DecisionService edge as the policy frontend calls it (real list,
 * metrics, trace line to a sink that drops it), throttle on (--operator-rate 1000000: buckets taken,
 * never empty), two ways, alternating in slices:
 *
 *   memory   in-memory buckets (no --store)
 *   redis    shared buckets on a local redis-server (spawned here on a free port): one Lua script per
 *            counted message; each slice waits until every store reply has been handled, so the
 *            client's CPU for the round trips is inside the slice
 *
 * Reports CPU µs per request of this process (redis-server's own CPU apart, from /proc), the p99 of
 * the answer (the verdict never waits on the store), and the p99 of the store round trip.
 * Never asserts: it prints a table.
 *
 *   npm run build && node bench/store.mjs [--seconds 20]
 */
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { scanList } from './corpus.mjs';
import { REAL_LIST } from './fixtures.mjs';
import { startRedisServer } from './harness.mjs';
import { buildSyntheticList } from './lists.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(join(REPO, 'dist', p));
const { DecisionService } = await dist('decision-service.js');
const { createMetrics } = await dist('observe/metrics.js');
const { DecisionTracer } = await dist('observe/trace.js');
const { OperatorLedger } = await dist('trust/operators.js');
const { WhitelistIndex } = await dist('whitelist/whitelist-index.js');
const { prepareList } = await dist('whitelist/prepare.js');
const { RedisStore } = await dist('store/redis-store.js');
const { sharedBuckets } = await dist('store/shared-buckets.js');

const args = process.argv.slice(2);
const SECONDS = Number(args[args.indexOf('--seconds') + 1] ?? 20) || 20;

const redis = await startRedisServer();
const redisCpuMs = () => redis.cpuSeconds() * 1000;

const xml = existsSync(REAL_LIST) ? readFileSync(REAL_LIST) : Buffer.from(await buildSyntheticList(6500));
const prepared = prepareList(xml, { trust: null, allowUnsigned: true, maxEntries: 200_000 });
if (!prepared.ok) throw new Error(`list: ${prepared.reason} ${prepared.detail}`);
const index = new WhitelistIndex({ generatedAt: prepared.list.generatedAt }, prepared.list.entries, prepared.list.rejected);
const scan = scanList(xml.toString('utf8'));
const facts = [];
let seed = 20261206;
const random = () => (seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32;
for (let i = 0; i < 4096; i++) {
  const b = scan.bindings[Math.floor(random() * scan.bindings.length)];
  facts.push({
    frontend: 'policy',
    stage: 'rcpt',
    tlsProtocol: 'TLSv1.3',
    tlsCipher: 'TLS_AES_256_GCM_SHA384',
    cert: { kind: 'cn', cn: b.cn, issuerCn: 'AC IGC-SANTE ELEMENTAIRE ORGANISATIONS', verified: true },
    sender: `dr.x@${b.domains[0]}`,
  });
}

const store = new RedisStore({ url: redis.url, password: null, ca: null, timeoutMs: 1000 });
while (store.redis.status !== 'ready') await new Promise((r) => setTimeout(r, 20));
let pending = 0;
let errors = 0;
const roundTrip = createHistogram();
const timedStore = {
  kind: 'redis',
  takeTokens(steps) {
    pending++;
    const t0 = process.hrtime.bigint();
    return store.takeTokens(steps).finally(() => {
      pending--;
      roundTrip.record(Number(process.hrtime.bigint() - t0) || 1);
    });
  },
};
const health = { failed: () => errors++, succeeded: () => undefined };

const logger = pino({ level: 'info' }, { write() {} });
function service(buckets) {
  const metrics = createMetrics({ defaultMetrics: false });
  const settings = { rate: 1_000_000, burst: 1_000_000, mode: 'enforce', exempt: [] };
  const ledger = new OperatorLedger(
    settings,
    { forget: () => undefined, overRate: () => undefined },
    undefined,
    undefined,
    buckets,
  );
  ledger.setList(index);
  return new DecisionService({
    currentIndex: () => index,
    policy: { tlsProfile: 'off', trustedIssuerCns: new Set() },
    metrics,
    tracer: new DecisionTracer(logger, null, () => undefined),
    logger,
    operators: ledger,
  });
}
const arms = [
  { name: 'memory', service: service(undefined) },
  { name: 'redis', service: service(sharedBuckets(timedStore, health)) },
].map((a) => ({ ...a, cpuUs: 0, requests: 0, answer: createHistogram() }));

const SLICE = 2000;
let message = 0;
async function runSlice(arm, record) {
  const before = process.cpuUsage();
  for (let i = 0; i < SLICE; i++) {
    const f = facts[i & 4095];
    const t0 = process.hrtime.bigint();
    arm.service.answer('policy', f, { stage: 'rcpt', connectionId: 1, instance: `b.${message++}`, sender: f.sender }, t0);
    if (record) arm.answer.record(Number(process.hrtime.bigint() - t0) || 1);
  }
  do await new Promise((r) => setImmediate(r));
  while (pending > 0);
  const used = process.cpuUsage(before);
  if (!record) return;
  arm.cpuUs += used.user + used.system;
  arm.requests += SLICE;
}

for (let r = 0; r < 5; r++) for (const arm of arms) await runSlice(arm, false);
roundTrip.reset();
const redisBefore = redisCpuMs();
const until = Date.now() + SECONDS * 1000;
let round = 0;
while (Date.now() < until) {
  for (let k = 0; k < arms.length; k++) await runSlice(arms[(k + round) % arms.length], true);
  round++;
}
const redisMs = redisCpuMs() - redisBefore;
const per = (arm) => arm.cpuUs / arm.requests;
console.log(`list: ${index.entries.length} entries; ${round} rounds of ${SLICE} messages per arm; store errors: ${errors}`);
console.log('| arm | messages | CPU µs / decision | vs memory | answer p99 µs |');
console.log('|---|---|---|---|---|');
for (const arm of arms) {
  const vs = arm === arms[0] ? '' : `${((per(arm) / per(arms[0]) - 1) * 100).toFixed(0)} %`;
  console.log(
    `| ${arm.name} | ${arm.requests} | ${per(arm).toFixed(2)} | ${vs} | ${(arm.answer.percentile(99) / 1000).toFixed(1)} |`,
  );
}
console.log(
  `store round trip p50 ${(roundTrip.percentile(50) / 1e6).toFixed(2)} ms, p99 ${(roundTrip.percentile(99) / 1e6).toFixed(2)} ms; redis-server CPU ${((redisMs * 1000) / arms[1].requests).toFixed(2)} µs / message`,
);
await store.close();
await redis.stop();
