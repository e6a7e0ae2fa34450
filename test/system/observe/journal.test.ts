/**
 * journald priorities on the real daemon's stdout: each line starts with its syslog priority <N>
 * under systemd (JOURNAL_STREAM names stdout), the hand-written trace lines included; plain JSON
 * otherwise, unless --log-format journal. The pure parts: test/unit/observe/journal.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { freePort } from '../../support/daemon.js';
import { askOnce, postfixRequest } from '../../support/policy-client.js';
import { REPO_ROOT } from '../../support/fixtures.js';

describe('journald priority prefix (the daemon)', () => {
  /** The daemon's stdout in a file until it says it is ready; then SIGTERM; the lines it wrote. */
  async function daemonLines(
    args: string[],
    journalStreamOf: 'stdout' | 'other',
    whileUp: (policy: string) => Promise<void> = async () => {},
  ): Promise<string[]> {
    const dir = mkdtempSync(join(tmpdir(), 'journal-daemon-'));
    const out = join(dir, 'stdout');
    const fd = openSync(out, 'w');
    const st = fstatSync(fd);
    const env = {
      ...process.env,
      JOURNAL_STREAM: journalStreamOf === 'stdout' ? `${st.dev}:${st.ino}` : `${st.dev}:${st.ino + 7}`,
    };
    const policy = `127.0.0.1:${await freePort()}`;
    const http = `127.0.0.1:${await freePort()}`;
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(REPO_ROOT, 'src', 'cli.ts'),
        'serve',
        '--whitelist',
        'demo',
        '--allow-unsigned',
        '--state-dir',
        join(dir, 'state'),
        '--policy-listen',
        policy,
        '--http-listen',
        http,
        ...args,
      ],
      { cwd: REPO_ROOT, env, stdio: ['ignore', fd, 'inherit'] },
    );
    closeSync(fd);
    const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
    try {
      const deadline = Date.now() + 60_000;
      while (!readFileSync(out, 'utf8').includes('ready to answer')) {
        assert.ok(Date.now() < deadline && child.exitCode === null, `no "ready to answer" line:\n${readFileSync(out, 'utf8')}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      // The list in force (/readyz 200) before any question.
      while (
        (await fetch(`http://${http}/readyz`).then(
          async (r) => (await r.arrayBuffer(), r.status),
          () => 0,
        )) !== 200
      ) {
        assert.ok(Date.now() < deadline && child.exitCode === null, 'not ready');
        await new Promise((r) => setTimeout(r, 100));
      }
      await whileUp(policy);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
    const lines = readFileSync(out, 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    rmSync(dir, { recursive: true, force: true });
    return lines;
  }

  it('under systemd (auto, JOURNAL_STREAM is stdout) every line carries its priority: the warning <4>, info <6>', async () => {
    const lines = await daemonLines([], 'stdout', async (policy) => {
      assert.equal(await askOnce(policy, postfixRequest('mx.demo-hopital.test', 'dr.martin@demo-hopital.mssante.fr')), 'DUNNO');
      assert.match(await askOnce(policy, postfixRequest('mx.unknown.test', 'dr.martin@demo-hopital.mssante.fr')), /^550 /);
    });
    // The hand-written trace lines, one per decision, carry the prefix too.
    const traces = lines.filter((l) => l.includes('"event":"decision"'));
    assert.equal(traces.length, 2, lines.join('\n'));
    for (const l of traces) assert.match(l, /^<6>\{"level":"info",/);
    const warn = lines.find((l) => l.includes('"event":"allow_unsigned"'));
    assert.ok(warn !== undefined, lines.join('\n'));
    assert.match(warn, /^<4>\{"level":"warn",/);
    const ready = lines.find((l) => l.includes('ready to answer'));
    assert.match(ready ?? '', /^<6>\{"level":"info",/);
    for (const l of lines) assert.match(l, /^<[2-7]>\{"level":"/);
    // What journald keeps after the prefix is the JSON line itself.
    for (const l of lines) JSON.parse(l.slice(3));
  });

  it('stdout redirected elsewhere (auto, JOURNAL_STREAM does not match): plain JSON lines; --log-format journal forces the prefix', async () => {
    const plain = await daemonLines([], 'other');
    assert.ok(plain.length > 0);
    for (const l of plain) assert.match(l, /^\{"level":"/);
    const forced = await daemonLines(['--log-format', 'journal'], 'other');
    assert.ok(
      forced.some((l) => l.startsWith('<4>{"level":"warn"')),
      forced.join('\n'),
    );
  });
});
