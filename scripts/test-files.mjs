#!/usr/bin/env node
/**
 * Prints the test files of one set, for `npm run test:unit` and `npm run test:system`:
 *   unit    in-process tests (no daemon or CLI spawned, no system tool but openssl): the fast loop
 *   system  everything else: the real daemon, Postfix, Exim, Prometheus, xmlsec1, miltertest, systemd
 * A file is a unit test unless a SYSTEM glob matches it. A glob that matches nothing is an error,
 * so a moved or renamed file cannot slip into the wrong set unnoticed.
 */
import { readdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SYSTEM = [
  'test/e2e/**', // spawned daemon, real MTAs and Prometheus
  'test/faults/**', // spawned daemon, strace, chattr, prlimit
  'test/cli/**', // spawns the CLI on the real list
  'test/deploy/**', // systemd-analyze
  'test/whitelist/signature.test.ts', // xmlsec1 as the independent signer
  'test/frontends/milter/miltertest.test.ts', // miltertest
  'test/store/redis-*.test.ts', // a private redis-server
];

const root = join(fileURLToPath(import.meta.url), '..', '..');

function globToRegExp(glob) {
  const body = glob
    .split('**')
    .map((part) =>
      part
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[^/]*'),
    )
    .join('.*');
  return new RegExp(`^${body}$`);
}

function testFiles(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...testFiles(path));
    else if (entry.name.endsWith('.test.ts')) out.push(relative(root, path).split(sep).join('/'));
  }
  return out;
}

const set = process.argv[2];
if (set !== 'unit' && set !== 'system') {
  process.stderr.write('usage: node scripts/test-files.mjs unit|system\n');
  process.exit(2);
}
const files = testFiles(join(root, 'test')).sort();
const patterns = SYSTEM.map((glob) => ({ glob, re: globToRegExp(glob) }));
const unmatched = patterns.filter((p) => !files.some((f) => p.re.test(f)));
if (unmatched.length > 0) {
  process.stderr.write(`scripts/test-files.mjs: no test file matches ${unmatched.map((p) => p.glob).join(', ')}\n`);
  process.exit(1);
}
const isSystem = (f) => patterns.some((p) => p.re.test(f));
process.stdout.write(`${files.filter((f) => isSystem(f) === (set === 'system')).join('\n')}\n`);
