/**
 * --trace-file against the running daemon: one line per decision lands in the file (not on stdout),
 * and logrotate's rename + SIGUSR1 moves later lines to a new file at the same path, none lost.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startDaemon, type DaemonHandle } from '../../support/daemon.js';
import { VALID, logRecords, unsignedListFile, waitFor } from '../../support/faults.js';
import { PolicyClient, postfixRequest } from '../../support/policy-client.js';

function decisions(path: string): Array<Record<string, unknown>> {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r['event'] === 'decision');
}

describe('--trace-file (running daemon)', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'trace-file-'));
  let daemon: DaemonHandle | null = null;
  after(async () => {
    await daemon?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes one line per decision to the file; rename + SIGUSR1 reopens it with no line lost', async () => {
    const trace = join(dir, 'trace.log');
    daemon = await startDaemon({ whitelist: unsignedListFile(), extraArgs: ['--trace-file', trace] });
    const client = await PolicyClient.connect(daemon.policyAddress);
    const ask = async (count: number, tag: string): Promise<void> => {
      for (let i = 0; i < count; i++) {
        assert.equal(await client.ask({ ...postfixRequest(VALID.cn, VALID.sender), queue_id: `${tag}${i}` }), 'DUNNO');
      }
    };

    await ask(50, 'A');
    await waitFor('the first 50 trace lines', () => decisions(trace).length === 50);
    renameSync(trace, `${trace}.1`);
    // Between logrotate's rename and its postrotate signal, lines still go to the renamed file.
    await ask(20, 'B');
    // (Lines still buffered when the signal comes go to the new file: wait for these to be written.)
    await waitFor('the 20 lines after the rename in the renamed file', () => decisions(`${trace}.1`).length === 70);
    daemon.signal('SIGUSR1');
    await waitFor('the reopen log line', () => logRecords(daemon!, 'trace_reopen').length === 1);
    await ask(30, 'C');
    client.close();
    assert.equal(await daemon.stop(), 0);

    const rotated = decisions(`${trace}.1`).map((r) => r['queue_id']);
    const current = decisions(trace).map((r) => r['queue_id']);
    const all = [...rotated, ...current];
    const expected = [
      ...Array.from({ length: 50 }, (_, i) => `A${i}`),
      ...Array.from({ length: 20 }, (_, i) => `B${i}`),
      ...Array.from({ length: 30 }, (_, i) => `C${i}`),
    ];
    assert.deepEqual(all, expected, 'every decision once, in order, across the two files');
    assert.deepEqual(current, expected.slice(70), 'the lines after SIGUSR1 are in the new file');
    assert.equal(logRecords(daemon, 'decision').length, 0, 'no trace line on stdout');
    assert.ok(logRecords(daemon, 'listening').length === 1, 'the other logs stay on stdout');
  });
});
