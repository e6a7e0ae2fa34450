#!/usr/bin/env node
/**
 * The hot path alone, in interleaved rounds: the plain-Node floor and the daemon (and, to A/B a
 * change, a second build of the daemon) answer the same policy corpus at c=100, one row each per
 * round, in turn, so that the machine's load weighs on every server alike. Prints, per server, the
 * median CPU µs per request, req/s and p99 over the rounds, and their ratios to the floor measured
 * in the same rounds. Never asserts.
 *
 *   npm run build && node bench/hotpath.mjs [--rounds 5] [--seconds 4] [--connections 100]
 *   node bench/hotpath.mjs --cli-b /path/to/other/dist/cli.js      (A/B: the other build as "daemon B")
 *   node bench/hotpath.mjs --cpu-prof DIR                           (the daemon writes a V8 CPU profile there)
 *   node bench/hotpath.mjs --postfwd1                               (postfwd1 too, per-CN rules, its cache warmed first)
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildTransactions, corpusFile, scanList } from './corpus.mjs';
import { REAL_LIST, REAL_SIGNER } from './fixtures.mjs';
import { buildSyntheticList } from './lists.mjs';
import { postfwdAvailable, startPostfwd1, writePostfwdRules } from './postfwd.mjs';
import { REPO, runLoad, settle, startDaemon, startFloor, unitEnv, runBench } from './harness.mjs';
import { freePorts, memoryMiB, stopChild } from './procs.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args[i + 1];
};
const ROUNDS = Number(opt('--rounds', 5));
const SECONDS = Number(opt('--seconds', 4));
const CONNECTIONS = Number(opt('--connections', 100));
const CLI_A = resolve(opt('--cli', join(REPO, 'dist', 'cli.js')));
const CLI_B = opt('--cli-b', null);
const PROFILE_DIR = opt('--cpu-prof', null);
const POSTFWD1 = args.includes('--postfwd1');
const SERVER_CPU = 0;
const LOAD_CPU = 1;
const log = (...a) => process.stderr.write(`[hotpath] ${a.join(' ')}\n`);
const tmp = mkdtempSync(join(tmpdir(), 'mssante-hotpath-'));
chmodSync(tmp, 0o755); // postfwd1 runs as nobody and reads its rule files from here

async function startFloorRow() {
  const floor = await startFloor(SERVER_CPU);
  return { name: 'floor', child: floor.child, pid: floor.pid, port: floor.policyPort };
}

async function startDaemonRow(name, cli, list) {
  const slug = name.replace(/\W/g, '');
  const daemon = await startDaemon({
    cli,
    tmp,
    env: unitEnv(),
    cpu: SERVER_CPU,
    listPath: list.path,
    signer: list.signer,
    stateDir: join(tmp, `state-${slug}`),
    trace: 'file',
    nodeArgs: PROFILE_DIR !== null && name === 'daemon' ? ['--cpu-prof', '--cpu-prof-dir', resolve(PROFILE_DIR)] : [],
  });
  await settle(daemon);
  return { name, child: daemon.child, pid: daemon.pid, port: daemon.policyPort };
}

/** postfwd1 with bench/postfwd.mjs's per-CN rules; its request cache filled by one full pass of its corpus. */
async function startWarmPostfwd1(scan, corpus) {
  const dir = join(tmp, 'postfwd1');
  const rules = writePostfwdRules(dir, scan);
  const [port] = await freePorts(1);
  const pf = await startPostfwd1({
    rules,
    port,
    pidFile: join(dir, 'postfwd1.pid'),
    logFile: join(dir, 'postfwd1.log'),
    cpu: SERVER_CPU,
  });
  const server = { name: 'postfwd1', pid: pf.pid, port, stop: pf.stop, corpus };
  log('postfwd1: filling its request cache (one pass of its corpus)');
  await row(server, corpus, { warmupFullPass: true, seconds: 1 });
  return server;
}

async function row(server, corpus, { warmupFullPass = false, seconds = SECONDS } = {}) {
  const r = await runLoad(
    server,
    { connections: CONNECTIONS, corpus, port: server.port, seconds, warmupFullPass },
    { tmp, cpu: LOAD_CPU },
  );
  return { rps: r.rps, p99: r.latencyMs.p99, cpuUs: r.cpuUsPerRequest, wrong: r.wrong, failed: r.failed };
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function main() {
  const real = existsSync(REAL_LIST) && existsSync(REAL_SIGNER);
  const xml = real ? readFileSync(REAL_LIST) : Buffer.from(await buildSyntheticList(6500));
  const list = { path: join(tmp, 'whitelist.xml'), signer: real ? REAL_SIGNER : null };
  writeFileSync(list.path, xml);
  const corpus = join(tmp, 'corpus.json');
  const scan = scanList(xml.toString('utf8'));
  const transactions = buildTransactions(scan, 4000);
  writeFileSync(corpus, JSON.stringify(corpusFile('policy', transactions)));
  const servers = [await startFloorRow(), await startDaemonRow('daemon', CLI_A, list)];
  if (CLI_B !== null) servers.push(await startDaemonRow('daemon B', resolve(CLI_B), list));
  if (POSTFWD1) {
    // As bench/run.js: its first 1 000 transactions, so that one pass fills the cache.
    const pfCorpus = join(tmp, 'corpus-postfwd.json');
    writeFileSync(pfCorpus, JSON.stringify(corpusFile('policy', transactions.slice(0, 1000))));
    if (postfwdAvailable('postfwd1')) servers.push(await startWarmPostfwd1(scan, pfCorpus));
    else log('postfwd1 not installed (Debian package postfwd): left out');
  }
  const load = [loadavg()[0]];
  const rows = new Map(servers.map((s) => [s.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    // Each round in another order: no server always runs right after the same one.
    const order = round % 2 === 0 ? servers : [...servers].reverse();
    for (const s of order) {
      const r = await row(s, s.corpus ?? corpus);
      rows.get(s.name).push(r);
      log(
        `round ${round + 1} ${s.name}: ${Math.round(r.rps)} req/s, ${r.cpuUs.toFixed(1)} µs CPU/req, p99 ${r.p99.toFixed(2)} ms`,
      );
    }
  }
  load.push(loadavg()[0]);
  const rss = new Map(servers.map((s) => [s.name, memoryMiB(s.pid).rss]));
  for (const s of servers) await (s.child === undefined ? s.stop() : stopChild(s.child));
  const floor = rows.get('floor');
  const lines = [
    `Hot path, ${real ? 'real list' : 'synthetic list'}, c=${CONNECTIONS}, ${ROUNDS} interleaved rounds of ${SECONDS} s, 1-min load average ${load.map((x) => x.toFixed(1)).join(' → ')}`,
    '',
    '| server | req/s | CPU µs/req | CPU × floor (median of per-round ratios) | p99 ms | p99 × floor (median of per-round ratios) | wrong / failed | RSS MiB |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const s of servers) {
    const r = rows.get(s.name);
    const cpuRatio = median(r.map((x, i) => x.cpuUs / floor[i].cpuUs));
    const p99Ratio = median(r.map((x, i) => x.p99 / floor[i].p99));
    lines.push(
      `| ${s.name} | ${Math.round(median(r.map((x) => x.rps)))} | ${median(r.map((x) => x.cpuUs)).toFixed(1)} | ${s.name === 'floor' ? '' : cpuRatio.toFixed(2)} | ${median(r.map((x) => x.p99)).toFixed(2)} | ${s.name === 'floor' ? '' : p99Ratio.toFixed(2)} | ${s.name === 'floor' ? 'not checked' : `${r.reduce((a, x) => a + x.wrong, 0)} / ${r.reduce((a, x) => a + x.failed, 0)}`} | ${Math.round(rss.get(s.name))} |`,
    );
  }
  const pf = rows.get('postfwd1');
  if (pf !== undefined) {
    const daemon = rows.get('daemon');
    const rpsRatio = median(daemon.map((x, i) => x.rps / pf[i].rps));
    const cpuRatio = median(daemon.map((x, i) => pf[i].cpuUs / x.cpuUs));
    lines.push(
      '',
      `daemon vs postfwd1 (median of per-round ratios): ${rpsRatio.toFixed(2)} × its req/s, ${cpuRatio.toFixed(2)} × less CPU per request`,
    );
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

runBench(main, log, tmp);
