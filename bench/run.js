#!/usr/bin/env node
/**
 * The benchmark of issues 8 and 16: the daemon against a plain-Node floor server (and postfwd1 /
 * postfwd2 when installed; `check` against xmlsec1 on the same list), same machine, same run; ratios, not absolute numbers, are the verdict. Servers are
 * pinned to CPU 0 and the load generator to CPU 1 (taskset). Prints one markdown table (plus the
 * goal checklist) and writes bench/results/latest.json. Never asserts: it measures and reports.
 *
 *   npm run bench                      (builds, then: node bench/run.js)
 *   node bench/run.js --seconds 4      (shorter rows)
 *   node bench/run.js --only floor,daemon,startup,big,postfwd,postfwd1,prepare,socketmap
 *   BENCH_TRACE=stdout node bench/run.js  (trace through stdout redirected to a file, as before --trace-file)
 *   BENCH_CLI=/path/to/other/dist/cli.js node bench/run.js --only daemon   (A/B a change)
 *   node bench/run.js --soak MINUTES   (issue 6: mixed traffic, a list reload every 10 s)
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTransactions, corpusFile, milterOptneg, MILTER_END_OF_SESSION, scanList, socketmapCorpus } from './corpus.mjs';
import { REAL_LIST, REAL_SIGNER } from './fixtures.mjs';
import { buildSyntheticList } from './lists.mjs';
import { runLoad as runLoadOn, settle, startDaemon as startDaemonProcess, startFloor, unitEnv, runBench } from './harness.mjs';
import { postfwdAvailable, startPostfwd, startPostfwd1, writePostfwdRules } from './postfwd.mjs';
import { HAS_TASKSET, cpuSeconds, freePorts, killAllChildren, memoryMiB, scrape, sleep, stopChild } from './procs.mjs';

const BENCH = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(BENCH, '..');
// BENCH_CLI: another build of the daemon to compare (an experiment), same rows, same floor.
const CLI = process.env.BENCH_CLI ? resolve(process.env.BENCH_CLI) : join(REPO, 'dist', 'cli.js');
/** The daemon runs with the environment of the systemd unit (harness.mjs unitEnv). */
const UNIT_ENV = unitEnv();
const SERVER_CPU = 0;
const LOAD_CPU = 1;
const M = 'mssante_policyd_';
const GENERATOR_BOUND_PCT = 90;

const GOALS = {
  // issue 16
  cpu: 2.0,
  postfwd1: 6,
  rssRealIdle: 90,
  rssRealAfterLoad: 120,
  prepareVsXmlsec: 5,
  preparePeakMiB: 150,
  prepare50kPeakMB: 400,
  milterVsPolicy: 1.5,
  // issue 8
  throughput: 0.8,
  p99: 1.5,
  postfwd: 10,
  rss50k: 200,
  reloadCpu: 2,
  reloadP99: 2,
  startup: 1.5,
};
/** Runs of `check` and of xmlsec1, interleaved; medians are compared. */
const PREPARE_RUNS = 3;

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : Number(args[i + 1]);
};
const ROW_S = option('--seconds', 8);
const SOAK_MIN = option('--soak', 0);

const tmp = mkdtempSync(join(tmpdir(), 'mssante-bench-'));
chmodSync(tmp, 0o755); // postfwd2 runs as nobody and reads its rule files from here
/** Sections to run (development aid): floor, daemon, startup, big, postfwd. */
const ONLY = (() => {
  const i = args.indexOf('--only');
  return i < 0 ? null : new Set(args[i + 1].split(','));
})();
const runs = (section) => ONLY === null || ONLY.has(section);
const log = (...a) => process.stderr.write(`[bench] ${a.join(' ')}\n`);

process.on('SIGINT', () => {
  killAllChildren();
  process.exit(130);
});

runBench(main, log, tmp);

// ------------------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first (npm run bench does)`);
  if (!HAS_TASKSET) log('taskset not found (util-linux): servers and load generator are NOT pinned to separate CPUs');
  const lists = await prepareLists();
  if (SOAK_MIN > 0) return soak(lists, SOAK_MIN);
  const started = Date.now();
  const rows = [];
  const facts = { list: lists.description, loadAvgStart: loadavg()[0] };
  const stateDir = join(tmp, 'state');
  facts.failedSections = [];
  // A section that fails (a busy machine, a missing tool) is reported; the others still run.
  const section = async (name, body) => {
    if (!runs(name)) return;
    try {
      await body();
    } catch (error) {
      log(`section ${name} FAILED: ${error.stack ?? error}`);
      facts.failedSections.push(`${name}: ${String(error.message ?? error).split('\n')[0]}`);
      killAllChildren();
    }
  };
  await section('floor', () => floorSection(lists, rows));
  // The start-up section restarts from the state dir this one fills.
  if (runs('daemon') || runs('startup'))
    await section(runs('daemon') ? 'daemon' : 'startup', () => daemonSection(lists, stateDir, rows, facts));
  await section('startup', () => startupSection(lists, stateDir, rows, facts));
  await section('socketmap', () => socketmapSection(lists, rows));
  await section('big', async () => {
    const big = await bigListRun();
    rows.push(big.row);
    Object.assign(facts, big.facts);
  });
  await section('postfwd1', async () => {
    if (postfwdAvailable('postfwd1')) rows.push(await postfwd1Run(lists));
    else log('postfwd1 not installed (Debian package postfwd): postfwd1 row skipped');
  });
  await section('postfwd', async () => {
    if (postfwdAvailable('postfwd2')) rows.push(await postfwdRun(lists));
    else log('postfwd2 not installed (Debian package postfwd): postfwd row skipped');
  });
  await section('prepare', async () => Object.assign(facts, await prepareSection(lists)));
  facts.totalSeconds = (Date.now() - started) / 1000;
  facts.loadAvgEnd = loadavg()[0];
  report(rows, facts, lists);
}

async function floorSection(lists, rows) {
  const floor = await startFloor(SERVER_CPU);
  const corpus = lists.policyCorpus;
  rows.push(await loadRow('floor', 'floor (plain Node, answers DUNNO unread)', floor, { connections: 16, corpus, check: false }));
  rows.push(await loadRow('floor', 'floor', floor, { connections: 100, corpus, check: false }));
  rows.push(
    await loadRow('floor', 'floor, new connection per request', floor, {
      connections: 16,
      mode: 'newconn',
      corpus,
      check: false,
    }),
  );
  await stopChild(floor.child);
}

/** The daemon with its trace log going to a file: the realistic set-up. */
async function daemonSection(lists, stateDir, rows, facts) {
  const name = listName(lists);
  const corpus = lists.policyCorpus;
  const d = await startDaemon({ lists, stateDir, trace: 'file' });
  facts.readyColdMs = d.readyMs;
  await settle(d);
  facts.rssIdleRealMiB = memoryMiB(d.pid).rss;
  if (runs('daemon')) {
    rows.push(await loadRow('daemon', `daemon, ${name}, trace to file`, d, { connections: 16, corpus }));
    rows.push(await loadRow('daemon', `daemon, ${name}, trace to file`, d, { connections: 100, corpus }));
    rows.push(await loadRow('daemon', 'daemon, new connection per request', d, { connections: 16, mode: 'newconn', corpus }));
    rows.push(
      await loadRow('milter', 'daemon, Milter frontend', d, {
        connections: 100,
        protocol: 'milter',
        corpus: lists.milterCorpus,
        port: d.milterPort,
      }),
    );
    const reload = await reloadUnderLoad(d, lists);
    rows.push(reload.row);
    facts.reloadUnderLoad = reload.reloads;
    facts.rssAfterLoadRealMiB = memoryMiB(d.pid);
    facts.idleReloads = [await idleReload(d, lists), await idleReload(d, lists)];
    facts.traceBytes = statSync(d.traceFile).size;
  }
  await stopChild(d.child);
}

/** Sending side: socketmap lookups (transport, TLS policy, recipient check), same list, fresh daemon. */
async function socketmapSection(lists, rows) {
  const d = await startDaemon({ lists, stateDir: join(tmp, 'state-socketmap'), trace: 'file' });
  await settle(d);
  const corpus = lists.socketmapCorpus;
  rows.push(
    await loadRow('socketmap', 'daemon, socketmap lookups', d, {
      connections: 16,
      protocol: 'socketmap',
      corpus,
      port: d.socketmapPort,
    }),
  );
  rows.push(
    await loadRow('socketmap', 'daemon, socketmap lookups', d, {
      connections: 100,
      protocol: 'socketmap',
      corpus,
      port: d.socketmapPort,
    }),
  );
  // The yardstick of the goal: the policy frontend of the same daemon, right after.
  rows.push(
    await loadRow('socketmap-yardstick', 'same daemon, policy frontend (socketmap yardstick)', d, {
      connections: 100,
      corpus: lists.policyCorpus,
    }),
  );
  await stopChild(d.child);
}

/** Three restarts from the filled state dir (median time to ready), then a row with the trace to /dev/null. */
async function startupSection(lists, stateDir, rows, facts) {
  facts.readyFromStateMs = [];
  let d = null;
  for (let i = 0; i < 3; i++) {
    if (d !== null) await stopChild(d.child);
    d = await startDaemon({ lists, stateDir, trace: 'null' });
    facts.readyFromStateMs.push(d.readyMs);
    await settle(d);
  }
  rows.push(
    await loadRow('daemon', `daemon, ${listName(lists)}, trace to /dev/null`, d, {
      connections: 100,
      corpus: lists.policyCorpus,
    }),
  );
  await stopChild(d.child);
}

function listName(lists) {
  return lists.real ? 'real list' : 'synthetic list';
}

// ---- lists and corpora --------------------------------------------------------------------------

async function prepareLists() {
  const real = existsSync(REAL_LIST) && existsSync(REAL_SIGNER);
  let xml;
  let signer = null;
  if (real) {
    xml = readFileSync(REAL_LIST);
    signer = REAL_SIGNER;
  } else {
    log(
      `the real list is not at ${REAL_LIST}: real-list rows use a synthetic unsigned 6 500-entry list instead, and the real-list goals are not judged`,
    );
    xml = Buffer.from(await buildSyntheticList(6500));
  }
  // Two versions with different bytes and the same content: each SIGHUP puts a "new" list in force.
  // The trailing newline lies outside the signed root element, so the signature still holds.
  const variants = [xml, Buffer.concat([xml, Buffer.from('\n')])];
  const listPath = join(tmp, 'whitelist.xml');
  writeFileSync(listPath, variants[0]);
  const scan = scanList(xml.toString('utf8'));
  const transactions = buildTransactions(scan, 4000);
  const policyCorpus = writeCorpus('policy', transactions);
  const milterCorpus = writeCorpus('milter', transactions);
  const socketmapCorpusFile = join(tmp, 'corpus-socketmap.json');
  writeFileSync(socketmapCorpusFile, JSON.stringify(socketmapCorpus(scan, 4000)));
  const postfwdCorpus = writeCorpus('policy', transactions.slice(0, 1000), 'postfwd');
  const sizes = corpusFile('policy', transactions.slice(0, 200)).wire.map((w) => Buffer.from(w, 'base64').length);
  const description = real
    ? `real ANS list 2025-02-28 (${scan.entries} entries, signed, verified with its signer)`
    : `synthetic list (${scan.entries} entries, unsigned)`;
  return {
    real,
    signer,
    listPath,
    variants,
    next: 1,
    scan,
    policyCorpus,
    milterCorpus,
    socketmapCorpus: socketmapCorpusFile,
    postfwdCorpus,
    requestBytes: Math.round(sizes.reduce((a, b) => a + b, 0) / sizes.length),
    description,
  };
}

function writeCorpus(protocol, transactions, label = protocol) {
  const file = join(tmp, `corpus-${label}.json`);
  const corpus = corpusFile(protocol, transactions);
  if (protocol === 'milter') {
    corpus.optneg = milterOptneg().toString('base64');
    corpus.milterTail = MILTER_END_OF_SESSION.toString('base64');
  }
  writeFileSync(file, JSON.stringify(corpus));
  return file;
}

/** Atomically replaces the list file with the other variant (the daemon reads it on SIGHUP). */
function swapListFile(lists) {
  const temp = `${lists.listPath}.tmp`;
  writeFileSync(temp, lists.variants[lists.next]);
  renameSync(temp, lists.listPath);
  lists.next = 1 - lists.next;
}

// ---- servers ------------------------------------------------------------------------------------

function startDaemon({ lists, stateDir, trace, listPath = lists.listPath, signer = lists.signer }) {
  return startDaemonProcess({ cli: CLI, tmp, env: UNIT_ENV, cpu: SERVER_CPU, listPath, signer, stateDir, trace });
}

// ---- load rows ----------------------------------------------------------------------------------

/** The load generator pinned to the other CPU against `server` (harness.mjs), ROW_S seconds unless told. */
function runLoad(server, options) {
  return runLoadOn(server, { seconds: ROW_S, ...options }, { tmp, cpu: LOAD_CPU });
}

async function loadRow(kind, label, server, options) {
  log(
    `${label}: ${options.connections} ${options.mode === 'newconn' ? 'concurrent one-shot clients' : 'connections'}, ${options.seconds ?? ROW_S} s`,
  );
  const r = await runLoad(server, options);
  return {
    kind,
    label,
    protocol: options.protocol ?? 'policy',
    mode: options.mode ?? 'persistent',
    connections: options.connections,
    check: options.check !== false,
    ...pick(r),
    rssMiB: memoryMiB(server.pid, options.withDescendants ?? false).rss,
  };
}

function pick(r) {
  return {
    requests: r.requests,
    rps: r.rps,
    p50: r.latencyMs.p50,
    p99: r.latencyMs.p99,
    p999: r.latencyMs.p999,
    max: r.latencyMs.max,
    cpuUs: r.cpuUsPerRequest,
    wrong: r.wrong,
    failed: r.failed,
    wrongSamples: r.wrongSamples,
    loadGenCpuPct: r.loadGenCpuPct,
    timeline: r.timeline,
  };
}

// ---- reloads ------------------------------------------------------------------------------------

function stateMtime(daemon) {
  try {
    return statSync(join(daemon.stateDir, 'whitelist.json')).mtimeMs;
  } catch {
    return 0;
  }
}

/**
 * SIGHUP with the other list variant in place; resolves when the daemon has put it in force (its
 * state-dir copy is rewritten last, then the load is counted). Waits mostly on the file, which
 * costs the daemon nothing; the event-loop delay over the reload comes from the scrapes of
 * /metrics made meanwhile (one before, one every 0.5 s, one after).
 */
async function reloadOnce(daemon, lists) {
  const before = await scrape(daemon.http);
  const loads = (m) => m.get(`${M}whitelist_load_duration_seconds_count`) ?? 0;
  const countBefore = loads(before);
  const sumBefore = before.get(`${M}whitelist_load_duration_seconds_sum`) ?? 0;
  const failuresBefore = sumFailures(before);
  // Every scrape resets the event-loop histogram: keep the worst over the scrapes of this reload.
  let loopMax = 0;
  let loopP99 = 0;
  const sample = async () => {
    const m = await scrape(daemon.http);
    loopMax = Math.max(loopMax, (m.get(`${M}nodejs_eventloop_lag_max_seconds`) ?? 0) * 1000);
    loopP99 = Math.max(loopP99, (m.get(`${M}nodejs_eventloop_lag_p99_seconds`) ?? 0) * 1000);
    return m;
  };
  const mtime = stateMtime(daemon);
  swapListFile(lists);
  const cpu0 = cpuSeconds(daemon.pid);
  daemon.child.kill('SIGHUP');
  const deadline = Date.now() + 60_000;
  // The state-dir copy is rewritten last; /metrics is asked only every 0.5 s in case it never is.
  for (let i = 1; Date.now() < deadline && stateMtime(daemon) === mtime; i++) {
    await sleep(20);
    if (i % 25 === 0 && loads(await sample()) > countBefore) break;
  }
  let after = await sample();
  while (Date.now() < deadline && loads(after) <= countBefore) {
    await sleep(50);
    after = await sample();
  }
  const cpuS = cpuSeconds(daemon.pid) - cpu0;
  return {
    completed: loads(after) > countBefore,
    failedLoads: sumFailures(after) - failuresBefore,
    wallS: (after.get(`${M}whitelist_load_duration_seconds_sum`) ?? 0) - sumBefore,
    cpuS,
    eventLoopMaxMs: loopMax,
    eventLoopP99Ms: loopP99,
  };
}

function sumFailures(metrics) {
  let n = 0;
  for (const [k, v] of metrics) if (k.startsWith(`${M}whitelist_load_failures_total`)) n += v;
  return n;
}

async function idleReload(daemon, lists) {
  log('reload of the list while idle (CPU of verify + parse + index + swap + persist)');
  await sleep(300);
  return reloadOnce(daemon, lists);
}

async function reloadUnderLoad(daemon, lists) {
  const seconds = Math.max(ROW_S, 9);
  log(`reload under load: 100 connections, ${seconds} s, SIGHUP at 2 s, 5 s and 8 s of the window`);
  const reloads = [];
  let driver = Promise.resolve();
  const onMeasureStart = () => {
    driver = (async () => {
      const t0 = Date.now();
      for (const at of [2000, 5000, 8000]) {
        if (at > seconds * 1000 - 1000) break;
        await sleep(Math.max(0, t0 + at - Date.now()));
        reloads.push({ atS: (Date.now() - t0) / 1000, ...(await reloadOnce(daemon, lists)) });
      }
    })();
  };
  const r = await runLoad(daemon, { connections: 100, corpus: lists.policyCorpus, seconds, onMeasureStart });
  await driver;
  return {
    row: {
      kind: 'reload',
      label: 'daemon, list reloads (SIGHUP) under load',
      protocol: 'policy',
      mode: 'persistent',
      connections: 100,
      check: true,
      ...pick(r),
      rssMiB: memoryMiB(daemon.pid).rss,
    },
    reloads,
  };
}

// ---- the 50 000-entry list ----------------------------------------------------------------------

async function bigListRun() {
  log('synthetic 50 000-entry list: build, start, load');
  const xml = await buildSyntheticList(50_000);
  const path = join(tmp, 'synthetic-50k.xml');
  writeFileSync(path, xml);
  const scan = scanList(xml);
  const corpus = writeCorpus('policy', buildTransactions(scan, 4000, 7), 'policy-50k');
  const daemon = await startDaemon({
    lists: null,
    stateDir: join(tmp, 'state-50k'),
    trace: 'null',
    listPath: path,
    signer: null,
  });
  await settle(daemon);
  const idle = memoryMiB(daemon.pid);
  const row = await loadRow('big', 'daemon, synthetic 50 000-entry list (unsigned)', daemon, {
    connections: 100,
    corpus,
    seconds: Math.min(ROW_S, 4),
  });
  const after = memoryMiB(daemon.pid);
  await stopChild(daemon.child);
  return {
    row,
    facts: {
      bigReadyColdMs: daemon.readyMs,
      bigRssIdleMiB: idle.rss,
      bigRssAfterLoadMiB: after.rss,
      bigRssPeakMiB: after.hwm,
      bigEntries: scan.entries,
    },
  };
}

// ---- postfwd -----------------------------------------------------------------------------------

async function postfwdRun(lists) {
  log('postfwd2 with the same check, request cache warm');
  const dir = join(tmp, 'postfwd');
  const rules = writePostfwdRules(dir, lists.scan);
  const [port, cachePort] = await freePorts(2);
  const pf = await startPostfwd({
    rules,
    port,
    cachePort,
    pidFile: join(dir, 'postfwd.pid'),
    logFile: join(dir, 'postfwd.log'),
    connections: 100,
    cpu: SERVER_CPU,
  });
  const server = { pid: pf.pid, policyPort: port };
  try {
    // The cache is warm once every corpus item has been answered once (the first pass is uncached).
    return await loadRow('postfwd', 'postfwd2 (same check, request cache warm)', server, {
      connections: 100,
      corpus: lists.postfwdCorpus,
      warmupFullPass: true,
      withDescendants: true,
    });
  } finally {
    await pf.stop();
  }
}

/** postfwd1: one process multiplexing all connections (what most operators run), cache warm. */
async function postfwd1Run(lists) {
  log('postfwd1 with the same per-CN rules, request cache warm');
  const dir = join(tmp, 'postfwd1');
  const rules = writePostfwdRules(dir, lists.scan);
  const [port] = await freePorts(1);
  const pf = await startPostfwd1({
    rules,
    port,
    pidFile: join(dir, 'postfwd1.pid'),
    logFile: join(dir, 'postfwd1.log'),
    cpu: SERVER_CPU,
  });
  const server = { pid: pf.pid, policyPort: port };
  try {
    return await loadRow('postfwd1', 'postfwd1 (per-CN dispatch rules, request cache warm)', server, {
      connections: 100,
      corpus: lists.postfwdCorpus,
      warmupFullPass: true,
    });
  } finally {
    await pf.stop();
  }
}

// ---- list preparation: `check` against xmlsec1 ---------------------------------------------------

/** CPU seconds (user + system) and peak RSS of one command, from GNU time (wait4's rusage). */
function timed(command, argv) {
  const r = spawnSync('/usr/bin/time', ['-f', '@@ %U %S %M', command, ...argv], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  const m = /@@ ([\d.]+) ([\d.]+) (\d+)\s*$/.exec(r.stderr ?? '');
  if (m === null) throw new Error(`${command}: no timing (${(r.stderr ?? '').slice(-300)})`);
  return { status: r.status, cpuS: Number(m[1]) + Number(m[2]), peakMiB: Number(m[3]) / 1024 };
}

/**
 * `check` (verify + parse + index, the daemon's list preparation in one process) on the real list,
 * against `xmlsec1 --verify` of the same file, runs interleaved; then `check` on the synthetic
 * 50 000-entry list (unsigned: parse + validate + index) for its peak RSS.
 */
async function prepareSection(lists) {
  const facts = {};
  if (!existsSync('/usr/bin/time')) {
    log('/usr/bin/time missing (Debian package time): prepare section skipped');
    return facts;
  }
  const xmlsecOk = spawnSync('xmlsec1', ['--version'], { stdio: 'ignore' }).status === 0;
  if (lists.real) {
    log(`list preparation: check vs xmlsec1 --verify on the real list, ${PREPARE_RUNS} runs each, interleaved`);
    const check = [];
    const xmlsec = [];
    for (let i = 0; i < PREPARE_RUNS; i++) {
      const c = timed(process.execPath, [CLI, 'check', lists.listPath, '--signer', lists.signer, '--max-list-age', '0']);
      if (c.status !== 0) throw new Error(`check of the real list exited ${c.status}`);
      check.push(c);
      if (xmlsecOk) {
        const x = timed('xmlsec1', ['--verify', '--pubkey-cert-pem', lists.signer, lists.listPath]);
        if (x.status !== 0) throw new Error(`xmlsec1 --verify of the real list exited ${x.status}`);
        xmlsec.push(x);
      }
    }
    facts.prepareReal = { check, xmlsec };
  }
  log('list preparation: check of the synthetic 50 000-entry list (peak RSS)');
  const path = join(tmp, 'synthetic-50k-check.xml');
  writeFileSync(path, await buildSyntheticList(50_000));
  const big = timed(process.execPath, [CLI, 'check', path, '--allow-unsigned', '--max-list-age', '0']);
  if (big.status !== 0) throw new Error(`check of the 50 000-entry list exited ${big.status}`);
  facts.prepare50k = big;
  rmSync(path, { force: true });
  return facts;
}

// ---- soak (issue 6) -----------------------------------------------------------------------------

async function soak(lists, minutes) {
  if (!(minutes > 0 && minutes <= 24 * 60)) throw new Error('--soak MINUTES: between 1 and 1440');
  log(
    `soak: ${minutes} min, policy 16 connections at 2 000 req/s + Milter 4 connections at 200 tx/s, a reload every 10 s; trace to /dev/null`,
  );
  const daemon = await startDaemon({ lists, stateDir: join(tmp, 'state-soak'), trace: 'null' });
  await settle(daemon);
  const snapshot = async () => {
    const m = await scrape(daemon.http);
    const mem = memoryMiB(daemon.pid);
    return {
      atS: Math.round((Date.now() - t0) / 1000),
      rssMiB: mem.rss,
      heapUsedMiB: (m.get(`${M}nodejs_heap_size_used_bytes`) ?? NaN) / 2 ** 20,
      eventLoopP99Ms: (m.get(`${M}nodejs_eventloop_lag_p99_seconds`) ?? NaN) * 1000,
      eventLoopMaxMs: (m.get(`${M}nodejs_eventloop_lag_max_seconds`) ?? NaN) * 1000,
      loads: m.get(`${M}whitelist_load_duration_seconds_count`) ?? 0,
      loadFailures: sumFailures(m),
    };
  };
  const t0 = Date.now();
  const snapshots = [await snapshot()];
  const seconds = minutes * 60;
  const policy = runLoad(daemon, { connections: 16, corpus: lists.policyCorpus, seconds, rate: 2000 });
  const milter = runLoad(daemon, {
    connections: 4,
    protocol: 'milter',
    corpus: lists.milterCorpus,
    port: daemon.milterPort,
    seconds,
    rate: 200,
  });
  const reloads = { ok: 0, failed: 0, slowest: 0 };
  const end = t0 + seconds * 1000 + 1000;
  let nextSnapshot = t0 + 60_000;
  while (Date.now() < end - 10_000) {
    await sleep(10_000);
    // Before the reload: its scrapes reset the event-loop histogram, this one covers the last 10 s.
    if (Date.now() >= nextSnapshot) {
      snapshots.push(await snapshot());
      nextSnapshot += 60_000;
      const s = snapshots.at(-1);
      log(
        `t=${s.atS}s rss ${s.rssMiB.toFixed(1)} MiB heap ${s.heapUsedMiB.toFixed(1)} MiB loop p99 ${s.eventLoopP99Ms.toFixed(1)} ms max ${s.eventLoopMaxMs.toFixed(1)} ms`,
      );
    }
    const r = await reloadOnce(daemon, lists);
    if (r.completed && r.failedLoads === 0) reloads.ok++;
    else reloads.failed++;
    reloads.slowest = Math.max(reloads.slowest, r.wallS);
  }
  const [p, m] = await Promise.all([policy, milter]);
  snapshots.push(await snapshot());
  await stopChild(daemon.child);
  const first = snapshots[0];
  const last = snapshots.at(-1);
  const lines = [
    `## Soak: ${minutes} min, ${lists.description}`,
    '',
    '| | start | end |',
    '|---|---:|---:|',
    `| RSS (MiB) | ${f1(first.rssMiB)} | ${f1(last.rssMiB)} |`,
    `| V8 heap used (MiB) | ${f1(first.heapUsedMiB)} | ${f1(last.heapUsedMiB)} |`,
    `| event-loop delay p99 (ms) | ${f1(first.eventLoopP99Ms)} | ${f1(last.eventLoopP99Ms)} |`,
    `| event-loop delay max (ms) | ${f1(first.eventLoopMaxMs)} | ${f1(last.eventLoopMaxMs)} |`,
    '',
    `Policy: ${p.requests} requests, ${p.wrong} wrong, ${p.failed} failed, p99 ${f2(p.latencyMs.p99)} ms. ` +
      `Milter: ${m.requests} transactions, ${m.wrong} wrong, ${m.failed} failed, p99 ${f2(m.latencyMs.p99)} ms. ` +
      `Reloads: ${reloads.ok} put in force, ${reloads.failed} failed, slowest ${f2(reloads.slowest)} s.`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  saveJson({ kind: 'soak', minutes, list: lists.description, snapshots, policy: p, milter: m, reloads }, 'soak.json');
}

// ---- report --------------------------------------------------------------------------------------

const f0 = (v) => (v === null || v === undefined || Number.isNaN(v) ? '–' : Math.round(v).toLocaleString('en-US'));
const f1 = (v) => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(1));
const f2 = (v) => (v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(2));
const ratio = (a, b) => (a === null || b === null || a === undefined || b === undefined || b === 0 ? null : a / b);

function report(rows, facts, lists) {
  const floorOf = (row) =>
    rows.find((r) => r.kind === 'floor' && r.connections === row.connections && r.mode === row.mode && r.protocol === 'policy');
  const table = [
    '| row | conns | req/s | × floor | p50 ms | p99 ms | p99 × floor | CPU µs/req | CPU × floor | wrong / failed | RSS MiB |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const floor = r.kind === 'floor' ? null : floorOf(r);
    const conns = r.mode === 'newconn' ? `${r.connections} (new conn/req)` : String(r.connections);
    table.push(
      `| ${r.label} | ${conns} | ${f0(r.rps)}${r.loadGenCpuPct >= GENERATOR_BOUND_PCT ? ' †' : ''} | ${floor ? f2(ratio(r.rps, floor.rps)) : ''} | ${f2(r.p50)} | ${f2(r.p99)} | ${floor ? f2(ratio(r.p99, floor.p99)) : ''} | ${f1(r.cpuUs)} | ${floor ? f2(ratio(r.cpuUs, floor.cpuUs)) : ''} | ${r.check ? `${r.wrong} / ${r.failed}` : 'not checked'} | ${f0(r.rssMiB)} |`,
    );
  }

  const d16 = rows.find((r) => r.kind === 'daemon' && r.connections === 16 && r.mode === 'persistent');
  const d100 = rows.find((r) => r.kind === 'daemon' && r.connections === 100 && r.mode === 'persistent');
  const reloadRow = rows.find((r) => r.kind === 'reload');
  const pf = rows.find((r) => r.kind === 'postfwd');
  const milter = rows.find((r) => r.kind === 'milter');
  const goals = [];
  const goals16 = [];
  const goal16 = (what, target, value, met) =>
    goals16.push({ what, target, value, met: met === null || Number.isNaN(met) ? null : Boolean(met) });
  /** `met` null: printed only (not judged, or its rows did not run). */
  const goal = (what, target, value, met) =>
    goals.push({ what, target, value, met: met === null || Number.isNaN(met) ? null : Boolean(met) });
  const judged = (ok, ...inputs) => (inputs.some((v) => v === null || v === undefined || Number.isNaN(v)) ? null : ok);
  const realOnly = (ok) => (lists.real ? ok : null);
  const f100 = d100 ? floorOf(d100) : undefined;
  const f16 = d16 ? floorOf(d16) : undefined;
  const t16 = ratio(d16?.rps, f16?.rps);
  const t100 = ratio(d100?.rps, f100?.rps);
  const p99r = ratio(d100?.p99, f100?.p99);
  const cpur = ratio(d100?.cpuUs, f100?.cpuUs);
  // ---- issue 16 ----
  goal16(
    'CPU per request, c=100, trace on (to a file)',
    `≤ ${GOALS.cpu} × floor`,
    `${f2(cpur)} × (${f1(d100?.cpuUs)} µs vs ${f1(f100?.cpuUs)} µs)`,
    judged(cpur <= GOALS.cpu, cpur),
  );
  const pf1 = rows.find((r) => r.kind === 'postfwd1');
  if (pf1) {
    const x = ratio(d100?.rps, pf1.rps);
    goal16(
      'throughput vs postfwd1 (per-CN dispatch rules, warm cache), 100 connections',
      `≥ ${GOALS.postfwd1} ×`,
      `${f1(x)} × (${f0(d100?.rps)} vs ${f0(pf1.rps)} req/s; postfwd1 ${pf1.wrong} wrong, ${f0(pf1.cpuUs)} µs CPU/req)`,
      judged(x >= GOALS.postfwd1, x),
    );
  } else goal16('throughput vs postfwd1', `≥ ${GOALS.postfwd1} ×`, 'postfwd1 not run (not installed or not asked)', null);
  if (facts.rssIdleRealMiB !== undefined) {
    const after = facts.rssAfterLoadRealMiB?.rss;
    goal16(
      `RSS with the ${listName(lists)}: idle / after sustained load (peak)`,
      `≤ ${GOALS.rssRealIdle} / ≤ ${GOALS.rssRealAfterLoad} MiB`,
      `${f0(facts.rssIdleRealMiB)} / ${f0(after)} MiB (${f0(facts.rssAfterLoadRealMiB?.hwm)})`,
      realOnly(judged(facts.rssIdleRealMiB <= GOALS.rssRealIdle && after <= GOALS.rssRealAfterLoad, after)),
    );
  }
  const prep = facts.prepareReal;
  if (prep && prep.check.length > 0) {
    const checkCpu = median(prep.check.map((r) => r.cpuS));
    const checkPeak = median(prep.check.map((r) => r.peakMiB));
    const xCpu = prep.xmlsec.length > 0 ? median(prep.xmlsec.map((r) => r.cpuS)) : null;
    const x = ratio(checkCpu, xCpu);
    goal16(
      `list preparation, real list (\`check\`: verify + parse + index; median of ${prep.check.length})`,
      `≤ ${GOALS.prepareVsXmlsec} × xmlsec1's CPU, ≤ ${GOALS.preparePeakMiB} MiB peak`,
      `${f1(x)} × (${f2(checkCpu)} s vs xmlsec1 ${f2(xCpu)} s CPU); peak ${f0(checkPeak)} MiB (xmlsec1 ${f0(prep.xmlsec.length > 0 ? median(prep.xmlsec.map((r) => r.peakMiB)) : null)} MiB)`,
      judged(x <= GOALS.prepareVsXmlsec && checkPeak <= GOALS.preparePeakMiB, x),
    );
  }
  if (facts.prepare50k || facts.bigRssPeakMiB !== undefined) {
    const mb = (mib) => (mib === undefined ? undefined : (mib * 2 ** 20) / 1e6);
    const checkMb = mb(facts.prepare50k?.peakMiB);
    const daemonMb = mb(facts.bigRssPeakMiB);
    const worst = Math.max(checkMb ?? 0, daemonMb ?? 0);
    goal16(
      '50 000-entry list preparation, peak RSS (`check` / daemon with its worker)',
      `≤ ${GOALS.prepare50kPeakMB} MB`,
      `${f0(checkMb)} MB / ${f0(daemonMb)} MB`,
      worst > 0 ? worst <= GOALS.prepare50kPeakMB : null,
    );
  }
  if (milter && d100) {
    const x = ratio(milter.cpuUs, d100.cpuUs);
    goal16(
      'Milter row CPU per transaction',
      `≤ ${GOALS.milterVsPolicy} × the policy row`,
      `${f2(x)} × (${f1(milter.cpuUs)} µs vs ${f1(d100.cpuUs)} µs)`,
      judged(x <= GOALS.milterVsPolicy, x),
    );
  }
  if (reloadRow && facts.reloadUnderLoad) {
    const bad = reloadRow.failed + reloadRow.wrong;
    goal16('wrong answers, reload under load', '0', `${reloadRow.wrong} wrong, ${reloadRow.failed} failed`, bad === 0);
  }

  // ---- issue 8 ----
  goal('throughput at 16 connections', `≥ ${GOALS.throughput} × floor`, `${f2(t16)} ×`, judged(t16 >= GOALS.throughput, t16));
  goal('throughput at 100 connections', `≥ ${GOALS.throughput} × floor`, `${f2(t100)} ×`, judged(t100 >= GOALS.throughput, t100));
  goal(
    'p99 at 100 connections',
    `≤ ${GOALS.p99} × floor`,
    `${f2(p99r)} × (${f2(d100?.p99)} ms vs ${f2(f100?.p99)} ms)`,
    judged(p99r <= GOALS.p99, p99r),
  );
  if (pf) {
    const x = ratio(d100?.rps, pf.rps);
    goal(
      'throughput vs postfwd2 (request cache warm), 100 connections',
      `≥ ${GOALS.postfwd} ×`,
      `${f1(x)} × (postfwd2: ${f0(pf.rps)} req/s, ${pf.wrong} wrong)`,
      judged(x >= GOALS.postfwd, x),
    );
  } else goal('throughput vs postfwd2', `≥ ${GOALS.postfwd} ×`, 'postfwd2 not run (not installed or not asked)', null);
  if (facts.bigRssIdleMiB !== undefined) {
    goal(
      'RSS with a synthetic 50 000-entry list (idle / after load / peak)',
      `≤ ${GOALS.rss50k} MiB`,
      `${f0(facts.bigRssIdleMiB)} / ${f0(facts.bigRssAfterLoadMiB)} / ${f0(facts.bigRssPeakMiB)} MiB`,
      Math.max(facts.bigRssIdleMiB, facts.bigRssAfterLoadMiB) <= GOALS.rss50k,
    );
  }
  if (facts.idleReloads) {
    const worst = Math.max(...facts.idleReloads.map((r) => r.cpuS));
    const ok = worst <= GOALS.reloadCpu && facts.idleReloads.every((r) => r.completed && r.failedLoads === 0);
    goal(
      `reload of the ${listName(lists)}, idle: daemon CPU (verify + parse + index + swap + persist)`,
      `≤ ${GOALS.reloadCpu} s`,
      `${facts.idleReloads.map((r) => f2(r.cpuS)).join(' / ')} s CPU; ${facts.idleReloads.map((r) => f2(r.wallS)).join(' / ')} s wall`,
      realOnly(ok),
    );
  }
  if (reloadRow && facts.reloadUnderLoad) {
    const inForce = facts.reloadUnderLoad.filter((r) => r.completed && r.failedLoads === 0).length;
    const bad = reloadRow.failed + reloadRow.wrong;
    goal(
      'reloads under load (100 conns): failed + wrong answers',
      '0',
      `${bad} (${inForce}/${facts.reloadUnderLoad.length} reloads put in force)`,
      bad === 0 && inForce === facts.reloadUnderLoad.length,
    );
    const r = ratio(reloadRow.p99, d100?.p99);
    goal(
      'reloads under load: p99',
      `≤ ${GOALS.reloadP99} × steady`,
      `${f2(r)} × (${f2(reloadRow.p99)} ms; max ${f1(reloadRow.max)} ms)`,
      judged(r <= GOALS.reloadP99, r),
    );
    goal(
      'event-loop delay over each reload under load (max / p99)',
      'printed',
      facts.reloadUnderLoad.map((x) => `${f1(x.eventLoopMaxMs)} / ${f1(x.eventLoopP99Ms)} ms`).join('; '),
      null,
    );
  }
  if (facts.readyFromStateMs) {
    const readyState = median(facts.readyFromStateMs) / 1000;
    goal(
      `start-up to ready from the state dir, ${listName(lists)} (median of 3)`,
      `≤ ${GOALS.startup} s`,
      `${f2(readyState)} s (${facts.readyFromStateMs.map((v) => f2(v / 1000)).join(', ')}; empty state dir: ${f2(facts.readyColdMs / 1000)} s)`,
      realOnly(readyState <= GOALS.startup),
    );
  }
  const sm100 = rows.find((r) => r.kind === 'socketmap' && r.connections === 100);
  if (sm100) {
    const x = ratio(sm100.rps, rows.find((r) => r.kind === 'socketmap-yardstick')?.rps);
    goal(
      'socketmap lookups (100 conns): throughput vs the policy frontend, wrong answers',
      '≥ 1 ×, 0 wrong',
      `${f2(x)} × (${f0(sm100.rps)} lookups/s, p99 ${f2(sm100.p99)} ms), ${sm100.wrong} wrong / ${sm100.failed} failed`,
      judged(x >= 1 && sm100.wrong + sm100.failed === 0, x),
    );
  }
  if (milter)
    goal(
      'Milter frontend, same decisions (100 conns)',
      '0 wrong',
      `${f0(milter.rps)} tx/s, p99 ${f2(milter.p99)} ms, ${milter.wrong} wrong / ${milter.failed} failed`,
      milter.wrong + milter.failed === 0,
    );

  if (rows.some((r) => r.loadGenCpuPct >= GENERATOR_BOUND_PCT)) {
    table.push(
      '',
      `† the load generator used ≥ ${GENERATOR_BOUND_PCT} % of its CPU in this row: the generator, not the server, may be the limit.`,
    );
  }
  const goalTable = ['Goals of issue 16:', '', '| goal | target | measured | met |', '|---|---|---|:---:|'];
  for (const g of goals16)
    goalTable.push(`| ${g.what} | ${g.target} | ${g.value} | ${g.met === null ? '–' : g.met ? 'yes' : '**no**'} |`);
  goalTable.push('', 'Earlier goals (issue 8):', '', '| goal | target | measured | met |', '|---|---|---|:---:|');
  for (const g of goals)
    goalTable.push(`| ${g.what} | ${g.target} | ${g.value} | ${g.met === null ? '–' : g.met ? 'yes' : '**no**'} |`);

  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} CPUs, Linux ${release()}, Node ${process.version}`;
  const when = new Date().toISOString().slice(0, 10);
  const out = [
    `## Benchmark (${when}; ${machine})`,
    '',
    `List: ${lists.description}. Requests: Postfix 3.7 RCPT policy requests, ~${lists.requestBytes} bytes, 90 % passes, 10 % refusals of five reasons; every answer's first word checked. ` +
      `Servers pinned to CPU ${SERVER_CPU}, load generator to CPU ${LOAD_CPU}${HAS_TASKSET ? '' : ' (taskset missing: NOT pinned)'}; one request in flight per connection; ${ROW_S} s per row after 1 s warm-up. ` +
      `Trace log: one JSON line per decision at info level (${f1(facts.traceBytes / 2 ** 20)} MiB written by the trace-to-file daemon, ${process.env.BENCH_TRACE === 'stdout' || process.env.BENCH_CLI !== undefined ? 'stdout redirected to a file' : '--trace-file'}). ` +
      `Daemon environment: ${
        Object.keys(UNIT_ENV).length === 0
          ? "none (Node's defaults)"
          : Object.entries(UNIT_ENV)
              .map(([k, v]) => `\`${k}=${v}\``)
              .join(' ')
      } (the systemd unit's${process.env.BENCH_NODE_OPTIONS !== undefined ? ', NODE_OPTIONS from BENCH_NODE_OPTIONS' : ''}). ` +
      `Machine load (1-min load average) at start / end: ${f1(facts.loadAvgStart)} / ${f1(facts.loadAvgEnd)} on ${cpus().length} CPUs.`,
    '',
    ...table,
    '',
    ...(facts.failedSections.length > 0
      ? [`Sections that failed (their goals are not judged): ${facts.failedSections.join('; ')}`, '']
      : []),
    ...goalTable,
    '',
  ];
  process.stdout.write(`${out.join('\n')}\n`);
  saveText(`${out.join('\n')}\n`, 'latest.md');
  saveJson(
    {
      kind: 'bench',
      date: new Date().toISOString(),
      machine,
      daemonEnv: UNIT_ENV,
      list: lists.description,
      requestBytes: lists.requestBytes,
      rowSeconds: ROW_S,
      rows,
      goals16,
      goals,
      facts,
    },
    'latest.json',
  );
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function saveJson(data, name) {
  saveText(`${JSON.stringify(data, null, 2)}\n`, name);
}

/** bench/results/ is ignored by git: the README quotes what matters. */
function saveText(text, name) {
  const dir = join(BENCH, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, name), text);
  log(`wrote ${join(dir, name)}`);
}
