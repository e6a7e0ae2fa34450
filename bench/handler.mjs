#!/usr/bin/env node
/**
 * The policy answer path alone, two builds A/B in one process: for each build, 100 policy sessions
 * (codec, Facts, decide() with the list, operator ledger, peer ledger, metrics, the trace line to a
 * --trace-file sink on /dev/null) answer the bench corpus, one request per chunk as at c=100. No
 * socket, so the machine's network and scheduler noise stay out: what it shows is the JavaScript a
 * change saves. The builds take turns in short slices; CPU time is process.cpuUsage(). Prints the
 * median ns per request of each and the median of the per-slice ratios. Never asserts.
 *
 *   npm run build && node bench/handler.mjs --b /path/to/other/dist [--a dist] [--rounds 15]
 *
 * A build's dist/ must resolve this project's packages (pino, prom-client, ...): a checkout with its
 * node_modules, or a copy of dist/ kept inside this one (scratch/ is ignored by git and lint).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { buildTransactions, corpusFile, scanList } from './corpus.mjs';
import { REAL_LIST } from './fixtures.mjs';
import { buildSyntheticList } from './lists.mjs';
import { REPO } from './harness.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i < 0 ? fallback : args[i + 1];
};
const DIST_A = resolve(opt('--a', join(REPO, 'dist')));
const DIST_B = opt('--b', null);
const ROUNDS = Number(opt('--rounds', 15));
const SESSIONS = 100;
/** Requests per slice: 40 event-loop turns of one request per session (the trace sink writes once per turn). */
const TURNS = 40;

const real = existsSync(REAL_LIST);
const xml = real ? readFileSync(REAL_LIST) : Buffer.from(await buildSyntheticList(6500));
const wire = corpusFile('policy', buildTransactions(scanList(xml.toString('utf8')), 4000)).wire.map((b) =>
  Buffer.from(b, 'base64'),
);

/** One build's answer path, wired as src/daemon.ts wires it (no throttle: accounting only). */
async function pipeline(dist) {
  const load = (path) => import(pathToFileURL(join(dist, path)).href);
  const [prepare, indexModule, metricsModule, sinkModule, traceModule, operatorsModule, peersModule, serviceModule, frontend] =
    await Promise.all(
      [
        'whitelist/prepare.js',
        'whitelist/whitelist-index.js',
        'observe/metrics.js',
        'observe/trace-sink.js',
        'observe/trace.js',
        'trust/operators.js',
        'trust/peers.js',
        'decision-service.js',
        'frontends/policy/frontend.js',
      ].map(load),
    );
  const prepared = prepare.prepareList(xml, { trust: null, allowUnsigned: true, maxEntries: 100_000 });
  if (!prepared.ok) throw new Error(`${dist}: the list does not prepare: ${prepared.detail}`);
  const { list } = prepared;
  const index = new indexModule.WhitelistIndex(
    { generatedAt: list.generatedAt, sha256: list.sha256 },
    list.entries,
    list.rejected,
  );
  const metrics = metricsModule.createMetrics({ defaultMetrics: false });
  const logger = pino({ level: 'info' }, pino.destination('/dev/null'));
  const sink = new sinkModule.TraceFileSink({ path: '/dev/null' });
  const operators = new operatorsModule.OperatorLedger(
    { rate: 0, burst: 0, mode: 'enforce', exempt: [] },
    { forget() {}, overRate() {} },
  );
  operators.setList(index);
  metrics.readOperatorCounts(() => operators.counts());
  const peers = new peersModule.PeerLedger(new peersModule.MemoryPeerHistory(), {
    changed() {},
    malformed() {},
    failed() {},
  });
  peers.setList(index);
  const service = new serviceModule.DecisionService({
    currentIndex: () => index,
    policy: { tlsProfile: 'off', trustedIssuerCns: new Set() },
    metrics,
    tracer: new traceModule.DecisionTracer(logger, null, sink.write),
    logger,
    operators,
    peers,
  });
  const protocol = frontend.POLICY_FRONTEND.protocol(
    { limits: { maxLineBytes: 4096, maxRequestBytes: 16_384, maxAttributes: 100 }, maxConnectionBytes: 1 << 20 },
    { service, currentIndex: () => index, metrics, logger },
  );
  let replies = 0;
  const sessions = Array.from({ length: SESSIONS }, (_, id) =>
    protocol.createSession({
      id: id + 1,
      remote: '127.0.0.1:40000',
      draining: false,
      write() {
        replies++;
      },
      end() {},
      fail(kind) {
        throw new Error(`protocol error ${kind}`);
      },
      count() {},
    }),
  );
  return { dist, sessions, replies: () => replies };
}

let offset = 0;
/** One slice: TURNS event-loop turns of one request per session; CPU ns per request. */
async function slice(p) {
  const before = process.cpuUsage();
  let n = 0;
  for (let turn = 0; turn < TURNS; turn++) {
    for (const session of p.sessions) {
      session.answer(session.decode(wire[offset++ % wire.length]));
      session.heldBytes();
      session.pendingBytes();
      n++;
    }
    await new Promise((r) => setImmediate(r));
  }
  const used = process.cpuUsage(before);
  return ((used.user + used.system) * 1000) / n;
}

const median = (v) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];

async function main() {
  const builds = [await pipeline(DIST_A)];
  if (DIST_B !== null) builds.push(await pipeline(resolve(DIST_B)));
  for (let w = 0; w < 5; w++) for (const b of builds) await slice(b);
  const rows = builds.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    // Each round in another order: neither build always runs right after the other.
    const order = round % 2 === 0 ? builds.map((_, i) => i) : builds.map((_, i) => i).reverse();
    for (const i of order) rows[i].push(await slice(builds[i]));
  }
  const lines = [
    `Policy answer path in process, ${real ? 'real list' : 'synthetic list'}, ${SESSIONS} sessions, ${ROUNDS} interleaved rounds of ${SESSIONS * TURNS} requests`,
    '',
    '| build | CPU ns/request (median) | × A (median of per-round ratios) |',
    '|---|---:|---:|',
  ];
  builds.forEach((b, i) => {
    const ratio = median(rows[i].map((x, r) => x / rows[0][r]));
    lines.push(`| ${i === 0 ? 'A' : 'B'} ${b.dist} | ${Math.round(median(rows[i]))} | ${i === 0 ? '' : ratio.toFixed(3)} |`);
  });
  const expected = builds.length * (5 + ROUNDS) * SESSIONS * TURNS;
  for (const b of builds) if (b.replies() !== expected / builds.length) lines.push(`(${b.dist}: ${b.replies()} replies)`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
