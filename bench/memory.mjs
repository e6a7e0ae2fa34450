#!/usr/bin/env node
/**
 * The daemon's memory by phase (issue #25): resident set now and its peak within each phase, the
 * peak reset at the start of every phase (`/proc/PID/clear_refs` 5, Linux ≥ 4.0), so that a reload's
 * peak is not hidden behind a start-up's. Phases: start-up from the source, idle, one reload idle,
 * load alone (c=100), then the load again with two reloads (SIGHUP) inside it — the goal "daemon peak
 * during a reload under load". Also V8's heap and external memory from /metrics. Never asserts.
 *
 *   npm run build && node bench/memory.mjs                  (the real list, signed, with its signer)
 *   node bench/memory.mjs --big                             (a synthetic unsigned 50 000-entry list)
 *   node bench/memory.mjs --cli /path/to/other/dist/cli.js  (another build)
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildTransactions, corpusFile, scanList } from './corpus.mjs';
import { REAL_LIST, REAL_SIGNER } from './fixtures.mjs';
import { buildSyntheticList } from './lists.mjs';
import { REPO, runBench, runLoad, settle, startDaemon, unitEnv } from './harness.mjs';
import { memoryMiB, scrape, sleep, stopChild } from './procs.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args[i + 1];
};
const CLI = resolve(opt('--cli', join(REPO, 'dist', 'cli.js')));
const BIG = args.includes('--big');
const SECONDS = Number(opt('--seconds', 8));
const SERVER_CPU = 0;
const LOAD_CPU = 1;
const M = 'mssante_policyd_';
const log = (...a) => process.stderr.write(`[memory] ${a.join(' ')}\n`);
const tmp = mkdtempSync(join(tmpdir(), 'mssante-memory-'));

async function main() {
  const xml = BIG ? Buffer.from(await buildSyntheticList(50_000)) : readFileSync(REAL_LIST);
  // Two versions, same content: the trailing newline lies outside the signed root element.
  const variants = [xml, Buffer.concat([xml, Buffer.from('\n')])];
  const listPath = join(tmp, 'whitelist.xml');
  writeFileSync(listPath, variants[0]);
  const corpus = join(tmp, 'corpus.json');
  writeFileSync(corpus, JSON.stringify(corpusFile('policy', buildTransactions(scanList(xml.toString('utf8')), 4000))));
  const load0 = loadavg()[0];
  const daemon = await startDaemon({
    cli: CLI,
    tmp,
    env: unitEnv(),
    cpu: SERVER_CPU,
    listPath,
    signer: BIG ? null : REAL_SIGNER,
    stateDir: join(tmp, 'state'),
    trace: 'file',
  });
  await settle(daemon);
  const rows = [];
  const resetPeak = () => writeFileSync(`/proc/${daemon.pid}/clear_refs`, '5');
  const record = async (phase) => {
    const { rss, hwm } = memoryMiB(daemon.pid);
    const m = await scrape(daemon.http);
    const mib = (name) => (m.get(`${M}${name}`) ?? 0) / 1048576;
    rows.push({
      phase,
      rss,
      peak: hwm,
      heapUsed: mib('nodejs_heap_size_used_bytes'),
      external: mib('nodejs_external_memory_bytes'),
    });
    log(`${phase}: rss ${rss.toFixed(0)} MiB, peak ${hwm.toFixed(0)} MiB`);
  };
  let next = 1;
  const reload = async () => {
    const loads = async () => (await scrape(daemon.http)).get(`${M}whitelist_load_duration_seconds_count`) ?? 0;
    const before = await loads();
    writeFileSync(listPath, variants[next++ % 2]);
    daemon.child.kill('SIGHUP');
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline && (await loads()) <= before) await sleep(100);
  };
  const load = (onMeasureStart) =>
    runLoad(daemon, { connections: 100, corpus, seconds: SECONDS, onMeasureStart }, { tmp, cpu: LOAD_CPU });

  await record('start-up from the source (settled)');
  resetPeak();
  await sleep(3000);
  await record('idle, 3 s');
  resetPeak();
  await reload();
  await record('one reload, idle');
  resetPeak();
  await load();
  await record(`policy load, c=100, ${SECONDS} s`);
  resetPeak();
  let reloads = Promise.resolve();
  await load(() => {
    reloads = (async () => {
      await sleep(2000);
      await reload();
      await reload();
    })();
  });
  await reloads;
  await record(`policy load, c=100, ${SECONDS} s, with 2 reloads`);
  await stopChild(daemon.child);

  const list = BIG ? 'synthetic unsigned 50 000-entry list' : 'real ANS list 2025-02-28 (6 494 entries, signed)';
  const lines = [
    `Daemon memory by phase, ${list}, systemd unit's environment; peak reset at each phase; 1-min load average ${load0.toFixed(1)} → ${loadavg()[0].toFixed(1)}`,
    '',
    '| phase | RSS MiB | peak RSS MiB | V8 heap used MiB | external MiB |',
    '|---|---:|---:|---:|---:|',
    ...rows.map(
      (r) => `| ${r.phase} | ${r.rss.toFixed(0)} | ${r.peak.toFixed(0)} | ${r.heapUsed.toFixed(1)} | ${r.external.toFixed(1)} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

runBench(main, log, tmp);
