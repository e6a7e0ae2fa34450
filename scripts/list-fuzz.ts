/**
 * Fuzz run of the differential check (issue #25): N deterministic mutations of the real ANS list,
 * each prepared by the libxml2 path and by the frozen v0.1 path, compared (test/support/list-differential.ts).
 *
 *   node --import tsx scripts/list-fuzz.ts [--count 10000] [--seed 25] [--entries 25] [--full 0]
 *
 * --entries: the mutated list is the real list cut to its first N entries and re-signed with the ANS
 * profile by a test signer (xmlsec1), so that 10 000 runs of the old path take minutes, not hours.
 * 80 % of the runs verify the signature (pinned test signer), 20 % read the list unsigned
 * (--allow-unsigned), where the entries reader meets every mutation. --full N adds N mutations of the
 * full real list with its real signature and signer. Exit 1 on any undocumented divergence.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadSignerTrust } from '../src/whitelist/signature.js';
import { REAL_LIST, REAL_SIGNER } from '../test/support/fixtures.js';
import {
  differential,
  randomMutation,
  realListExcerpt,
  seededRandom,
  type Comparison,
  type MutationKind,
} from '../test/support/list-differential.js';
import { TestPki } from '../test/support/pki.js';
import { signList } from '../test/support/xmlsec.js';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    seed: { type: 'string', default: '25' },
    entries: { type: 'string', default: '25' },
    full: { type: 'string', default: '0' },
  },
});
const count = Number(values.count);
const seed = Number(values.seed);
const full = Number(values.full);

const real = readFileSync(REAL_LIST, 'utf8');
const pki = new TestPki();
const signer = pki.issue(
  'fuzz-signer',
  [
    ['C', 'FR'],
    ['O', 'TEST ANS'],
    ['CN', 'alb.test.fr'],
  ],
  null,
  { usage: 'signing', notBefore: '20240101000000Z', notAfter: '20390101000000Z' },
);
const excerpt = signList(realListExcerpt(real, Number(values.entries)), signer);
const signedOptions = { trust: loadSignerTrust([signer.certPath]), allowUnsigned: false, maxEntries: 100_000 };
const unsignedOptions = { trust: null, allowUnsigned: true, maxEntries: 100_000 };

interface Tally {
  same: number;
  documented: Map<string, number>;
  divergent: number;
}
const byKind = new Map<string, Tally>();
const outcomes = new Map<string, number>();
const examples = new Map<string, Set<string>>();
const divergent: Array<{ i: number; kinds: MutationKind[]; mode: string; comparison: Comparison; text: string }> = [];

function record(i: number, kinds: MutationKind[], mode: string, comparison: Comparison, text: string): void {
  const key = `${mode} ${kinds.join('+')}`;
  const tally = byKind.get(key) ?? { same: 0, documented: new Map<string, number>(), divergent: 0 };
  byKind.set(key, tally);
  if (comparison.kind === 'same') tally.same++;
  else if (comparison.kind === 'documented')
    tally.documented.set(comparison.note, (tally.documented.get(comparison.note) ?? 0) + 1);
  else {
    tally.divergent++;
    divergent.push({ i, kinds, mode, comparison, text });
  }
  const o = `${mode}: old ${comparison.old} / new ${comparison.new} (${comparison.kind}${comparison.kind === 'documented' ? ` ${comparison.note}` : ''})`;
  outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
  if (comparison.kind === 'documented' && comparison.detail !== undefined) {
    const seen = examples.get(o) ?? new Set<string>();
    examples.set(o, seen);
    if (seen.size < 4) seen.add(comparison.detail.slice(0, 160));
  }
}

const rng = seededRandom(seed);
const started = process.cpuUsage();
for (let i = 0; i < count; i++) {
  const { text, kinds } = randomMutation(excerpt, rng);
  const mode = rng() < 0.8 ? 'signed' : 'unsigned';
  record(i, kinds, mode, differential(Buffer.from(text), mode === 'signed' ? signedOptions : unsignedOptions), text);
  if ((i + 1) % 1000 === 0) process.stderr.write(`${i + 1}/${count}\n`);
}
if (full > 0) {
  const realOptions = { trust: loadSignerTrust([REAL_SIGNER]), allowUnsigned: false, maxEntries: 100_000 };
  for (let i = 0; i < full; i++) {
    const { text, kinds } = randomMutation(real, rng);
    record(count + i, kinds, 'real-list', differential(Buffer.from(text), realOptions), text);
  }
}
const cpu = process.cpuUsage(started);

const total = count + full;
let same = 0;
let documented = 0;
for (const t of byKind.values()) {
  same += t.same;
  for (const n of t.documented.values()) documented += n;
}
process.stdout.write(
  `list fuzz: seed ${seed}, ${count} mutations of the real list's first ${values.entries} entries (re-signed)` +
    `${full > 0 ? ` + ${full} of the full real list` : ''}; CPU ${((cpu.user + cpu.system) / 1e6).toFixed(0)} s\n` +
    `same ${same}, documented safer refusals ${documented}, undocumented divergences ${divergent.length} (of ${total})\n`,
);
for (const [o, n] of [...outcomes.entries()].sort((a, b) => b[1] - a[1])) {
  process.stdout.write(`  ${String(n).padStart(6)}  ${o}\n`);
  for (const e of examples.get(o) ?? []) process.stdout.write(`            e.g. ${e}\n`);
}
if (divergent.length > 0) {
  const file = join(tmpdir(), `list-fuzz-divergent-${seed}.json`);
  writeFileSync(file, JSON.stringify(divergent, null, 1));
  for (const d of divergent.slice(0, 20)) {
    process.stdout.write(
      `DIVERGENT #${d.i} ${d.mode} ${d.kinds.join('+')}: old ${d.comparison.old} new ${d.comparison.new}: ${d.comparison.note}\n`,
    );
  }
  process.stdout.write(`all divergent texts: ${file}\n`);
}
process.exitCode = divergent.length > 0 ? 1 : 0;
