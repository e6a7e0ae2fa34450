#!/usr/bin/env node
/**
 * Cost of the change function at swap time (issue 20, goal: the diff of two real-size lists costs at
 * most 10 % of the list preparation's CPU). Same process, same run, CPU time from process.cpuUsage():
 *
 *   prepare   what the worker does with a new list: signature check with the real signer pinned,
 *             parse, validate (prepareList on the real 2025-02-28 list, 6 494 entries)
 *   index     what the main thread then builds (new WhitelistIndex)
 *   diff      diffIndexes(list in force, new list): the guard's and the journal's one computation, on
 *             the main thread at swap time — two shapes: a SISRA → SARA-like list (5 % of the domains
 *             moved, 1 % removed, 2 % added) and a refused one (20 % moved)
 *   guard     guardList(), which runs that diff and judges it
 *
 * Medians of --runs runs after a warm-up. Never asserts: it prints a table.
 *
 *   npm run build && node bench/changes.mjs [--runs 15]
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { REAL_LIST, REAL_SIGNER } from './fixtures.mjs';
import { buildSyntheticList } from './lists.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = (p) => import(join(REPO, 'dist', p));
const { WhitelistIndex } = await dist('whitelist/whitelist-index.js');
const { prepareList } = await dist('whitelist/prepare.js');
const { loadSignerTrust } = await dist('whitelist/signature.js');
const { diffIndexes } = await dist('whitelist/changes.js');
const { guardList } = await dist('whitelist/guard.js');

const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 15) || 15;

const real = existsSync(REAL_LIST) && existsSync(REAL_SIGNER);
const xml = real ? readFileSync(REAL_LIST) : Buffer.from(await buildSyntheticList(6500));
const trust = real ? loadSignerTrust({ signer: [REAL_SIGNER], signerCa: [], signerCn: [], signerSubject: [] }) : null;
const prepareOptions = { trust, allowUnsigned: !real, maxEntries: 200_000 };
if (!real) process.stderr.write(`the real list is not at ${REAL_LIST}: a synthetic unsigned 6 500-entry list is used\n`);

/** CPU milliseconds of one call. */
function cpuMs(fn) {
  const start = process.cpuUsage();
  fn();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function measure(fn, runs = RUNS) {
  fn(); // warm-up: JIT, caches
  return median(Array.from({ length: runs }, () => cpuMs(fn)));
}

let prepared;
const prepareMs = measure(
  () => {
    prepared = prepareList(xml, prepareOptions);
  },
  Math.max(3, Math.floor(RUNS / 3)),
);
if (!prepared.ok) throw new Error(`list: ${prepared.reason} ${prepared.detail}`);
const list = prepared.list;
const build = (entries, sha256, generatedAt) => new WhitelistIndex({ generatedAt, sha256 }, entries, []);
let before;
const indexMs = measure(() => {
  before = build(list.entries, list.sha256, list.generatedAt);
});

/** The next list: `movedPct` % of the domains onto one other listed certificate, some removed, some added. */
function nextList(movedPct, removedPct, addedPct) {
  const domains = [...before.domains()].sort();
  const target = list.entries[Math.floor(list.entries.length / 2)];
  const moved = new Set(domains.filter((_, i) => i % 100 < movedPct));
  const removed = new Set(domains.filter((_, i) => i % 100 >= 50 && i % 100 < 50 + removedPct));
  const entries = [];
  for (const e of list.entries) {
    if (removed.has(e.domain)) continue;
    entries.push(moved.has(e.domain) ? { ...e, dnKey: target.dnKey, dnDisplay: target.dnDisplay, cn: target.cn } : e);
  }
  const extra = Math.round((domains.length * addedPct) / 100);
  for (let i = 0; i < extra; i++) entries.push({ ...target, domain: `ajout-${i}.bench.mssante.fr` });
  return build(entries, 'f'.repeat(64), '2025-03-01T00:00:00Z');
}

const rows = [];
for (const [label, shape] of [
  ['5 % moved, 1 % removed, 2 % added (SISRA → SARA-like)', [5, 1, 2]],
  ['20 % moved (refused: list_rebind)', [20, 0, 0]],
]) {
  const after = nextList(...shape);
  let diff;
  const diffMs = measure(() => {
    diff = diffIndexes(before, after);
  });
  let verdict;
  const guardMs = measure(() => {
    verdict = guardList(
      { index: before, sha256: list.sha256 },
      { index: after, sha256: after.sha256 },
      { maxShrinkPercent: 10, maxRebindPercent: 10, maxListAgeDays: 0 },
      new Set(),
      Date.parse('2025-03-02T00:00:00Z'),
    );
  });
  rows.push({ label, diffMs, guardMs, counts: [diff.added.length, diff.removed.length, diff.rebound.length], verdict });
}

const f = (v) => v.toFixed(2);
const out = [
  `list: ${real ? 'real 2025-02-28 list, signature checked against the real signer' : 'synthetic'}; ${list.entries.length} entries, ${before.domainCount} domains; medians of ${RUNS} runs (prepare: ${Math.max(3, Math.floor(RUNS / 3))})`,
  '',
  '| step | CPU ms (median) | share of prepare |',
  '|---|---|---|',
  `| prepare (worker: signature, parse, validate) | ${f(prepareMs)} | 100 % |`,
  `| index of the new list (main thread) | ${f(indexMs)} | ${f((indexMs * 100) / prepareMs)} % |`,
];
for (const r of rows) {
  out.push(
    `| diff, ${r.label}: +${r.counts[0]} −${r.counts[1]} ~${r.counts[2]} | ${f(r.diffMs)} | **${f((r.diffMs * 100) / prepareMs)} %** |`,
  );
  out.push(
    `| guard (diff + verdict: ${r.verdict.verdict === 'refuse' ? r.verdict.reason : r.verdict.verdict}) | ${f(r.guardMs)} | ${f((r.guardMs * 100) / prepareMs)} % |`,
  );
}
const worst = Math.max(...rows.map((r) => r.guardMs));
out.push(
  '',
  `goal: diff ≤ 10 % of prepare → worst guard ${f((worst * 100) / prepareMs)} %: ${worst <= prepareMs / 10 ? 'met' : 'NOT met'}`,
);
process.stdout.write(`${out.join('\n')}\n`);
