/**
 * `npm run package:deb` in a fresh clone (no node_modules): the script installs the locked build
 * tools itself (npm ci) instead of failing with "tsc: not found". The clone is the repository's
 * tracked files copied into an empty directory, as `git clone` would give them. Needs dpkg-deb and npm
 * (and the npm registry or its cache, as `npm ci` always does); skips with a message elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../../support/fixtures.js';
import { toolOrSkip } from '../../support/tools.js';

// A deadline, not a speed claim: npm ci and tsc on a loaded 2-core machine.
const PACKAGE_TIMEOUT_MS = 900_000;

test('npm run package:deb works in a fresh clone: node_modules is installed first (npm ci), then the .deb is built', (t) => {
  for (const tool of ['dpkg-deb', 'npm', 'git']) if (toolOrSkip(t, tool) === null) return;
  const work = mkdtempSync(join(tmpdir(), 'mssante-fresh-clone-'));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const clone = join(work, 'clone');
  const tracked = execFileSync('git', ['ls-files', '-z'], { cwd: REPO_ROOT, encoding: 'utf8' }).split('\0');
  for (const file of tracked) {
    if (file === '' || !existsSync(join(REPO_ROOT, file))) continue;
    mkdirSync(dirname(join(clone, file)), { recursive: true });
    copyFileSync(join(REPO_ROOT, file), join(clone, file));
  }
  assert.equal(existsSync(join(clone, 'node_modules')), false, 'a clone has no node_modules');
  assert.equal(existsSync(join(clone, 'package-lock.json')), true);

  const out = join(work, 'out');
  const r = spawnSync('npm', ['run', 'package:deb', '--', out], {
    cwd: clone,
    encoding: 'utf8',
    timeout: PACKAGE_TIMEOUT_MS,
    env: { ...process.env, SOURCE_DATE_EPOCH: '1764547200' },
  });
  assert.equal(r.status, 0, `package:deb failed in a fresh clone:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^== node_modules missing \(a fresh clone\?\): npm ci, from package-lock\.json$/m);
  assert.doesNotMatch(r.stderr, /tsc: not found/);
  const deb = r.stdout.trim().split('\n').at(-1)!;
  assert.match(deb, /\/mssante-policyd_[0-9.]+_all\.deb$/);
  assert.ok(statSync(deb).size > 0);
  const files = execFileSync('dpkg-deb', ['-c', deb], { encoding: 'utf8' });
  assert.match(files, / \.\/usr\/lib\/mssante-policyd\/dist\/cli\.js$/m, 'the built code is in the package');
  // The clone now holds the locked build tools: the next package:deb goes straight to the build.
  assert.ok(existsSync(join(clone, 'node_modules', '.bin', 'tsc')));
});
