#!/usr/bin/env node
/**
 * Prints the test files of one suite, for `npm run test:unit` and `npm run test:system`. The folder
 * decides, nothing else:
 *   test/unit/    in-process tests: no daemon or CLI spawned, no system tool but openssl (the fast loop)
 *   test/system/  the real daemon or CLI, Postfix, Exim, Prometheus, xmlsec1, miltertest, systemd, faults
 *   test/support/ helpers, no test files
 * A `*.test.ts` anywhere else is an error that names it, so a new test cannot run in no suite (or in
 * the wrong one) unnoticed. `check` prints nothing and only checks.
 */
import { readdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SUITES = ['unit', 'system'];
const root = join(fileURLToPath(import.meta.url), '..', '..');

function testFiles(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...testFiles(path));
    else if (entry.name.endsWith('.test.ts')) out.push(relative(root, path).split(sep).join('/'));
  }
  return out;
}

/** `test/unit/trust/dn.test.ts` → `unit`; a file outside test/unit/ and test/system/ → null. */
export function suiteOf(file) {
  const folder = file.split('/')[1];
  return SUITES.includes(folder) ? folder : null;
}

const set = process.argv[2];
if (set !== 'unit' && set !== 'system' && set !== 'check') {
  process.stderr.write('usage: node scripts/test-files.mjs unit|system|check\n');
  process.exit(2);
}
const files = testFiles(join(root, 'test')).sort();
const stray = files.filter((f) => suiteOf(f) === null);
if (stray.length > 0) {
  process.stderr.write(
    `scripts/test-files.mjs: every test file lives under test/unit/ (in-process) or test/system/ (daemon, CLI, system tools); move:\n${stray.map((f) => `  ${f}`).join('\n')}\n`,
  );
  process.exit(1);
}
if (set !== 'check') process.stdout.write(`${files.filter((f) => suiteOf(f) === set).join('\n')}\n`);
