#!/usr/bin/env node
/**
 * Whole-daemon cost of the shared store (issue 24; goal: at most +30 % CPU per decision with the
 * throttle on). Two daemons of this build, same list, same settings, --operator-rate 1000000
 * --operator-burst 1000000 (every pass counted, no bucket ever empty):
 *
 *   off   no --store: in-memory buckets and certificate history
 *   on    --store on a local redis-server (spawned here): shared buckets (one Lua script per
 *         event-loop turn of counted messages), shared certificate history, fleet registry
 *
 * The policy protocol at 100 connections (one request in flight each, as 100 smtpd processes) from
 * bench/load.mjs, realistic Postfix 3.7 RCPT requests (bench/corpus.mjs, 90 % passes). Runs alternate
 * on/off (the order flips every round) so that the machine's noise falls on both; the daemon's CPU
 * per decision comes from /proc/<pid>/stat over the measured window, redis-server's apart. Medians of
 * the rounds and their ratio are printed, with the load average: never an assertion.
 *
 *   npm run build && node bench/fleet.mjs [--rounds 6] [--seconds 8] [--connections 100] [--redis-cpu -1|0|1]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTransactions, corpusFile, scanList } from './corpus.mjs';
import { REAL_LIST, REAL_SIGNER } from './fixtures.mjs';
import { REPO, runLoad, settle, startDaemon, startRedisServer, unitEnv, runBench } from './harness.mjs';
import { buildSyntheticList } from './lists.mjs';
import { HAS_TASKSET, killAllChildren, scrape, stopChild } from './procs.mjs';

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : Number(args[i + 1]);
};
const ROUNDS = option('--rounds', 6);
const SECONDS = option('--seconds', 8);
const CONNECTIONS = option('--connections', 100);
/** CPU for redis-server: 0 (with the daemon), 1 (with the load generator), -1: not pinned (default). */
const REDIS_CPU = option('--redis-cpu', -1);
const SERVER_CPU = 0;
const LOAD_CPU = 1;
const THROTTLE = ['--operator-rate', '1000000', '--operator-burst', '1000000'];
const log = (...a) => process.stderr.write(`[fleet] ${a.join(' ')}\n`);

const tmp = mkdtempSync(join(tmpdir(), 'mssante-bench-fleet-'));
process.on('SIGINT', () => {
  killAllChildren();
  process.exit(130);
});

const median = (values) => {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};

async function main() {
  const real = existsSync(REAL_LIST) && existsSync(REAL_SIGNER);
  const xml = real ? readFileSync(REAL_LIST) : Buffer.from(await buildSyntheticList(6500));
  const listPath = join(tmp, 'whitelist.xml');
  writeFileSync(listPath, xml);
  const scan = scanList(xml.toString('utf8'));
  const corpus = join(tmp, 'corpus-policy.json');
  writeFileSync(corpus, JSON.stringify(corpusFile('policy', buildTransactions(scan, 4000))));
  const signer = real ? REAL_SIGNER : null;

  const redis = await startRedisServer({ cpu: REDIS_CPU < 0 ? null : REDIS_CPU });
  const common = { cli: join(REPO, 'dist', 'cli.js'), tmp, env: unitEnv(), cpu: SERVER_CPU, listPath, signer, trace: 'file' };
  const arms = {
    off: await startDaemon({ ...common, stateDir: join(tmp, 'state-off'), extraArgs: THROTTLE }),
    on: await startDaemon({ ...common, stateDir: join(tmp, 'state-on'), extraArgs: [...THROTTLE, '--store', redis.url] }),
  };
  for (const d of Object.values(arms)) await settle(d);
  const load0 = loadavg();
  log(
    `list: ${real ? 'real ANS list 2025-02-28 (signed)' : 'synthetic (unsigned)'}, ${scan.entries} entries; load average ${load0.map((l) => l.toFixed(1)).join(' ')}`,
  );

  const rows = [];
  // One unmeasured run each: JIT, connections, the store's scripts loaded.
  for (const name of ['off', 'on'])
    await runLoad(arms[name], { connections: CONNECTIONS, corpus, seconds: 2 }, { tmp, cpu: LOAD_CPU });
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? ['off', 'on'] : ['on', 'off']) {
      let redisStart = 0;
      const r = await runLoad(
        arms[name],
        { connections: CONNECTIONS, corpus, seconds: SECONDS, onMeasureStart: () => (redisStart = redis.cpuSeconds()) },
        { tmp, cpu: LOAD_CPU },
      );
      const redisCpuS = redis.cpuSeconds() - redisStart;
      const row = {
        round,
        arm: name,
        requests: r.requests,
        rps: r.rps,
        cpuUs: r.cpuUsPerRequest,
        p99: r.latencyMs.p99,
        wrong: r.wrong,
        failed: r.failed,
        redisUs: name === 'on' ? (redisCpuS * 1e6) / r.requests : 0,
      };
      rows.push(row);
      log(
        `round ${round + 1}/${ROUNDS} ${name}: ${row.requests} requests, ${row.rps.toFixed(0)}/s, ${row.cpuUs.toFixed(1)} µs CPU/decision, p99 ${row.p99.toFixed(2)} ms, wrong ${row.wrong}, failed ${row.failed}`,
      );
    }
  }
  const load1 = loadavg();
  const on = await scrape(arms.on.http);
  const storeErrors = [...on]
    .filter(([k, v]) => k.startsWith('mssante_policyd_store_errors_total{') && v > 0)
    .map(([k, v]) => `${/op="([^"]*)"/.exec(k)?.[1]} ${v}`)
    .join(', ');
  const dbsize = spawnSync('redis-cli', ['-p', String(redis.port), 'dbsize'], { encoding: 'utf8' }).stdout?.trim() ?? '?';

  const of = (name, field) => rows.filter((r) => r.arm === name).map((r) => r[field]);
  const perRoundRatio = [];
  for (let round = 0; round < ROUNDS; round++) {
    const [a, b] = ['on', 'off'].map((n) => rows.find((r) => r.round === round && r.arm === n).cpuUs);
    perRoundRatio.push(a / b);
  }
  const m = (name, field) => median(of(name, field));
  console.log(
    `\n${cpus().length} CPUs; daemon on CPU ${SERVER_CPU}, load generator on CPU ${LOAD_CPU}, redis-server ${REDIS_CPU < 0 ? 'not pinned' : `on CPU ${REDIS_CPU}`}${HAS_TASKSET ? '' : ' (taskset missing: NOT pinned)'}; ` +
      `policy protocol, ${CONNECTIONS} connections, ${ROUNDS} interleaved rounds of ${SECONDS} s per arm; load average ${load0[0].toFixed(1)} → ${load1[0].toFixed(1)}`,
  );
  console.log('| arm | median CPU µs / decision | median p99 ms | median decisions/s | redis-server CPU µs / decision |');
  console.log('|---|---|---|---|---|');
  for (const name of ['off', 'on'])
    console.log(
      `| ${name} | ${m(name, 'cpuUs').toFixed(1)} | ${m(name, 'p99').toFixed(2)} | ${m(name, 'rps').toFixed(0)} | ${name === 'on' ? m(name, 'redisUs').toFixed(1) : '–'} |`,
    );
  console.log(
    `on/off CPU per decision: ratio of medians ${(m('on', 'cpuUs') / m('off', 'cpuUs')).toFixed(3)}, median of per-round ratios ${median(perRoundRatio).toFixed(3)} (rounds: ${perRoundRatio.map((x) => x.toFixed(2)).join(' ')})`,
  );
  console.log(
    `p99 on/off: ${(m('on', 'p99') / m('off', 'p99')).toFixed(2)}; wrong answers ${rows.reduce((n, r) => n + r.wrong, 0)}, failures ${rows.reduce((n, r) => n + r.failed, 0)}; store errors ${storeErrors || 'none'} (of ${rows.filter((r) => r.arm === 'on').reduce((n, r) => n + r.requests, 0)} measured decisions on, warm-ups included in the count); keys in the store ${dbsize}`,
  );
  for (const d of Object.values(arms)) await stopChild(d.child);
  await redis.stop();
}

runBench(main, log, tmp);
